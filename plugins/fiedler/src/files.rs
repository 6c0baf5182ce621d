//! Files in and out: the documents a call includes (read only from granted directories, within a
//! size cap) and the answer files written under the output directory.

use std::io::ErrorKind;
use std::path::Path;

/// A document included in a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The path as the client gave it.
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Reads every file, refusing (with the reason) one that is missing, not granted, not UTF-8, or
/// that takes the total past `max_bytes`.
pub fn read_all(paths: &[String], max_bytes: u64) -> Result<Vec<Document>, String> {
    let mut total = 0u64;
    let mut documents = Vec::with_capacity(paths.len());
    for path in paths {
        if !path.starts_with('/') {
            return Err(format!("file {path}: give an absolute path inside a directory granted to the plugin"));
        }
        // The size is checked before reading, so a huge file is refused, not loaded.
        let size = std::fs::metadata(path).map_err(|e| read_error(path, &e))?.len();
        total += size;
        if total > max_bytes {
            return Err(format!("files are larger than the {max_bytes} bytes one request may include"));
        }
        let bytes = std::fs::read(path).map_err(|e| read_error(path, &e))?;
        let text = String::from_utf8(bytes).map_err(|_| format!("file {path} is not UTF-8 text"))?;
        documents.push(Document { path: path.clone(), text });
    }
    Ok(documents)
}

fn read_error(path: &str, error: &std::io::Error) -> String {
    match error.kind() {
        ErrorKind::NotFound => format!(
            "file {path} cannot be read: it does not exist, or it is outside the directories granted to the plugin (grants.files.read)"
        ),
        _ => format!(
            "file {path} cannot be read: it is outside the directories granted to the plugin (grants.files.read) ({error})"
        ),
    }
}

/// The message sent to every model: the prompt, then each document under a header.
pub fn compose(prompt: &str, documents: &[Document]) -> String {
    let mut content = prompt.to_owned();
    for document in documents {
        content.push_str(&format!("\n\n--- file: {} ---\n", document.path));
        content.push_str(&document.text);
    }
    content
}

/// Checks that `dir` can hold answers (creating it if needed): it must be inside a writable
/// grant.
pub fn ensure_writable(dir: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!("output directory {dir} is not writable: it must be inside a directory granted writable (grants.files.write) ({e})")
    })?;
    let probe = Path::new(dir).join(".fiedler-write-check");
    std::fs::write(&probe, b"").map_err(|e| format!("output directory {dir} is not writable ({e})"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes one model's answer in a file of its own, never over another's (two calls with one
/// stem, when the kv that numbers them is away: the later gets `-2`, `-3`, ...); returns the
/// file's path.
pub fn write_answer(dir: &str, stem: &str, model: &str, answer: &str) -> Result<String, String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("output directory {dir}: {e}"))?;
    let safe: String =
        model.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let base = format!("{}/{stem}-{safe}", dir.trim_end_matches('/'));
    for n in 1..=1000 {
        let path = if n == 1 { format!("{base}.md") } else { format!("{base}-{n}.md") };
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                if let Err(e) = file.write_all(answer.as_bytes()) {
                    // No half answer left under a name another call would have taken.
                    let _ = std::fs::remove_file(&path);
                    return Err(format!("writing {path}: {e}"));
                }
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("writing {path}: {e}")),
        }
    }
    Err(format!("writing {base}.md: a thousand answers have that name already"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_prompt_and_documents() {
        let docs = vec![Document { path: "/d/a.md".into(), text: "alpha".into() }];
        assert_eq!(compose("Summarise", &docs), "Summarise\n\n--- file: /d/a.md ---\nalpha");
    }

    #[test]
    fn refuses_relative_missing_and_oversized_files() {
        assert!(read_all(&["a.md".into()], 10).unwrap_err().contains("absolute path"));
        assert!(read_all(&["/definitely/not/here.md".into()], 10).unwrap_err().contains("does not exist"));
        let dir = std::env::temp_dir().join(format!("fiedler-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("big.md");
        std::fs::write(&file, "x".repeat(100)).unwrap();
        let path = file.to_string_lossy().into_owned();
        assert_eq!(read_all(std::slice::from_ref(&path), 1000).unwrap()[0].text.len(), 100);
        assert!(read_all(&[path], 50).unwrap_err().contains("larger than"));
        let written = write_answer(&dir.to_string_lossy(), "1-1", "gpt/4o", "4").unwrap();
        assert!(written.ends_with("1-1-gpt_4o.md"), "{written}");
        let again = write_answer(&dir.to_string_lossy(), "1-1", "gpt/4o", "5").unwrap();
        assert!(again.ends_with("1-1-gpt_4o-2.md"), "another call's answer, same stem: {again}");
        assert_eq!(std::fs::read_to_string(written).unwrap(), "4", "not overwritten");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
