//! Distinguished names compared as names, not as strings: a subject (the host's RFC 4514
//! rendering of a verified certificate, or a `certificates` entry of the configuration) is
//! parsed into its relative distinguished names, each a set of attribute type and value, and
//! two subjects match when those are equal RDN by RDN. Attribute types compare without regard
//! to case and by their OID (`CN` = `cn` = `2.5.4.3`); values compare exactly, after escapes
//! are undone. So `CN=agent-7\, O=Example` (one CN) never matches `CN=agent-7, O=Example`.

/// One relative distinguished name: its attributes, sorted (a multi-valued RDN is a set).
type Rdn = Vec<(String, String)>;

/// A parsed distinguished name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(Vec<Rdn>);

/// Attribute type names and the OIDs they stand for (RFC 4514 section 3, and the ones
/// certificates commonly use).
const TYPES: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("C", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("STREET", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("TITLE", "2.5.4.12"),
    ("GIVENNAME", "2.5.4.42"),
    ("SN", "2.5.4.4"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
];

/// The canonical spelling of an attribute type: its OID.
fn canonical_type(kind: &str) -> Result<String, String> {
    let upper = kind.trim().to_ascii_uppercase();
    let upper = upper.strip_prefix("OID.").unwrap_or(&upper);
    if let Some((_, oid)) = TYPES.iter().find(|(name, _)| *name == upper) {
        return Ok((*oid).to_owned());
    }
    if !upper.is_empty() && upper.split('.').all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit())) {
        return Ok(upper.to_owned());
    }
    Err(format!("unknown attribute type {kind:?}"))
}

impl Name {
    /// Parses `text` (RFC 4514 escapes; RDNs separated by `,` and attributes within one by
    /// `+`, with spaces around either ignored).
    pub fn parse(text: &str) -> Result<Name, String> {
        let mut rdns = Vec::new();
        let mut rdn: Rdn = Vec::new();
        let mut kind = String::new();
        let mut value: Vec<u8> = Vec::new();
        // Whether the part being read is the value (after `=`), and where its escaped or
        // inner text ends (trailing unescaped spaces are dropped).
        let mut in_value = false;
        let mut kept = 0;
        let mut chars = text.chars().peekable();
        let finish = |kind: &mut String, value: &mut Vec<u8>, kept: usize, rdn: &mut Rdn| -> Result<(), String> {
            if kind.trim().is_empty() {
                return Err(format!("{text:?} has an attribute without a type"));
            }
            value.truncate(kept);
            let value = String::from_utf8(std::mem::take(value))
                .map_err(|_| format!("{text:?} escapes bytes that are not UTF-8"))?;
            rdn.push((canonical_type(kind)?, value));
            kind.clear();
            Ok(())
        };
        while let Some(c) = chars.next() {
            match c {
                '=' if !in_value => in_value = true,
                ',' | ';' | '+' if in_value => {
                    finish(&mut kind, &mut value, kept, &mut rdn)?;
                    in_value = false;
                    kept = 0;
                    if c != '+' {
                        rdn.sort();
                        rdns.push(std::mem::take(&mut rdn));
                    }
                }
                '\\' if in_value => {
                    let next = chars.next().ok_or_else(|| format!("{text:?} ends in an escape"))?;
                    if next.is_ascii_hexdigit() {
                        // `\XX`: one byte of the value's UTF-8.
                        let low = chars.next().filter(char::is_ascii_hexdigit);
                        let low = low.ok_or_else(|| format!("{text:?} has a bad hex escape"))?;
                        value.push(u8::from_str_radix(&format!("{next}{low}"), 16).expect("two hex digits"));
                    } else if "\"+,;<>\\ #=".contains(next) {
                        value.push(next as u8);
                    } else {
                        return Err(format!("{text:?} escapes {next:?}, which needs no escape"));
                    }
                    kept = value.len();
                }
                ' ' if in_value && value.is_empty() => {}
                c if in_value => {
                    let mut buf = [0u8; 4];
                    value.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    if c != ' ' {
                        kept = value.len();
                    }
                }
                c => kind.push(c),
            }
        }
        if !in_value {
            return Err(format!("{text:?} is not a distinguished name (TYPE=value, ...)"));
        }
        finish(&mut kind, &mut value, kept, &mut rdn)?;
        rdn.sort();
        rdns.push(rdn);
        Ok(Name(rdns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::parse(text).unwrap()
    }

    #[test]
    fn names_compare_rdn_by_rdn() {
        assert_eq!(name("CN=agent-7, O=Example"), name("cn=agent-7,o=Example"));
        assert_eq!(name("CN=agent-7,O=Example"), name("2.5.4.3=agent-7 , OID.2.5.4.10=Example"));
        assert_ne!(name("CN=agent-7, O=Example"), name("CN=agent-7\\, O=Example"), "one CN with a comma in it");
        assert_ne!(name("CN=agent-7, O=Example"), name("O=Example, CN=agent-7"), "order matters");
        assert_ne!(name("CN=agent-7"), name("CN=Agent-7"), "values are exact");
        assert_eq!(name("CN=a + OU=b, O=c"), name("OU=b+CN=a,O=c"), "a multi-valued RDN is a set");
        assert_ne!(name("CN=a + OU=b"), name("CN=a, OU=b"));
        assert_eq!(name("CN=\\ x\\2C"), name("CN=\\ x\\,"));
        assert_eq!(name("CN=caf\\C3\\A9"), name("CN=café"), "hex escapes are UTF-8 bytes");
        assert_eq!(name("CN=x\\ "), name("CN=x\\20"));
        assert_ne!(name("CN=x\\ "), name("CN=x"), "an escaped trailing space counts");
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in ["agent-7", "CN", "=x", "XX=y", "CN=x\\", "CN=\\zq"] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }
}
