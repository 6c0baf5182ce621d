//! What `redact` masks and how: secrets of common shapes (API keys, tokens, private keys),
//! e-mail addresses, and the configured patterns, in every string of a tool result.
//!
//! Most strings hold nothing to mask, so each is first searched once for all the rules
//! together (a [`RegexSet`]: one pass of one automaton, whatever the text), and only the rules
//! that matched it run on their own. Searching rule by rule costs a pass each, and in
//! WebAssembly (no SIMD, so no fast literal search) a pass can cost a microsecond per KiB.
//!
//! Most results hold nothing to mask either, so a result is first read as it streams by
//! ([`Scan`]: no tree of values, no copy of a string without escapes) to learn whether any of
//! its strings needs a rule; only then is it parsed, masked and written again.

use std::collections::BTreeMap;

use regex::{Regex, RegexSet};
use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Mask API keys and tokens of common shapes.
    pub secrets: bool,
    /// Mask e-mail addresses.
    pub emails: bool,
    /// More patterns, by name (the name appears in the mask and the count).
    pub patterns: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { secrets: true, emails: true, patterns: BTreeMap::new() }
    }
}

/// Secret shapes: (kind, pattern). Word boundaries are ASCII ones (`(?-u:\b)`), which the
/// one-pass automaton can search in any text (a Unicode `\b` makes it give up at the first
/// non-ASCII byte); a secret right after a non-ASCII letter is therefore masked too.
const SECRETS: &[(&str, &str)] = &[
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
    ("jwt", r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ("bearer", r"(?i)(?-u:\b)bearer\s+[A-Za-z0-9._~+/-]{16,}=*"),
    ("api_key", r"(?-u:\b)sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"),
    ("github_token", r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("aws_key", r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)"),
    ("google_key", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}"),
    ("slack_token", r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}"),
];

const EMAIL: &str = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}";

/// The most literals [`Masker::needed_literals`] names (the host takes at most 1024).
const MAX_NEEDED: usize = 1024;

/// The compiled rules, in the order they apply.
pub struct Masker {
    rules: Vec<Rule>,
    /// Every rule's pattern, searched together: which rules a string needs at all.
    any: RegexSet,
    /// Literals one of which every match of every rule holds; `None` when a rule has none.
    needed: Option<Vec<String>>,
}

/// One kind of thing to mask.
struct Rule {
    kind: String,
    regex: Regex,
}

impl Masker {
    /// Compiles `settings`; a configured pattern that does not compile is an error.
    pub fn new(settings: &Settings) -> Result<Masker, String> {
        let mut rules = Vec::new();
        if settings.secrets {
            for (kind, pattern) in SECRETS {
                let regex = Regex::new(pattern).expect("built-in patterns compile");
                rules.push(Rule { kind: kind.to_string(), regex });
            }
        }
        if settings.emails {
            let regex = Regex::new(EMAIL).expect("the e-mail pattern compiles");
            rules.push(Rule { kind: "email".into(), regex });
        }
        for (name, pattern) in &settings.patterns {
            let regex = Regex::new(pattern).map_err(|e| format!("pattern {name}: {e}"))?;
            rules.push(Rule { kind: name.clone(), regex });
        }
        let any = RegexSet::new(rules.iter().map(|rule| rule.regex.as_str())).map_err(|e| format!("patterns: {e}"))?;
        let needed = needed_literals(&rules);
        Ok(Masker { rules, any, needed })
    }

    /// Literals one of which every match of every rule holds, as it appears in a string
    /// (`None` when some rule has no such few literals): a result whose strings hold none has
    /// nothing to mask, and the host need not show it to the hook.
    pub fn needed_literals(&self) -> Option<&[String]> {
        self.needed.as_deref()
    }

    /// Masks every string in `value` in place; returns how many matches of each kind.
    pub fn mask(&self, value: &mut Value) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        self.walk(value, &mut counts);
        counts
    }

    fn walk(&self, value: &mut Value, counts: &mut BTreeMap<String, u64>) {
        match value {
            Value::String(text) => self.mask_text(text, counts),
            Value::Array(items) => items.iter_mut().for_each(|item| self.walk(item, counts)),
            // Every string is content a secret can hide in (URIs of resource links, `_meta`,
            // `structuredContent` at any depth, an object's keys) except a content item's
            // base64 data, which a pattern could match by chance and break, and MIME type.
            Value::Object(map) => {
                let item = ContentItem::of(map.keys().map(String::as_str));
                map.iter_mut().filter(|(key, _)| !item.skips(key)).for_each(|(_, item)| self.walk(item, counts));
                if map.keys().any(|key| self.any.is_match(key)) {
                    *map = self.mask_keys(std::mem::take(map), counts);
                }
            }
            _ => {}
        }
    }

    /// Masks `text` in place: in rule order, only the rules that match it as it came (one that
    /// would match nothing but a mask an earlier rule wrote is not run); each sees what the
    /// rules before it left.
    fn mask_text(&self, text: &mut String, counts: &mut BTreeMap<String, u64>) {
        if !self.any.is_match(text) {
            return;
        }
        for index in self.any.matches(text).iter() {
            let Rule { kind, regex } = &self.rules[index];
            let found = regex.find_iter(text).count() as u64;
            if found > 0 {
                *text = regex.replace_all(text, format!("[REDACTED:{kind}]").as_str()).into_owned();
                *counts.entry(kind.clone()).or_default() += found;
            }
        }
    }

    /// `map` with its keys masked (an address used as a key): a masked key another key already
    /// has is numbered (`[REDACTED:email] #2`), so no value is lost to another.
    fn mask_keys(&self, map: Map<String, Value>, counts: &mut BTreeMap<String, u64>) -> Map<String, Value> {
        let mut masked = Map::new();
        for (mut key, value) in map {
            self.mask_text(&mut key, counts);
            let (base, mut n) = (key.clone(), 1);
            while masked.contains_key(&key) {
                n += 1;
                key = format!("{base} #{n}");
            }
            masked.insert(key, value);
        }
        masked
    }

    /// Whether [`Masker::mask`] would find anything in the JSON `result`, read without
    /// building it; `None` when it is not JSON.
    fn needs_masking(&self, result: &str) -> Option<bool> {
        let mut reader = serde_json::Deserializer::from_str(result);
        let found = Scan { any: &self.any }.deserialize(&mut reader).ok()?;
        reader.end().ok()?;
        Some(found)
    }

    /// A result (`CallToolResult`, `GetPromptResult`, `ReadResourceResult`) with what it held
    /// masked and the counts in `_meta["relay/redacted"]`; `None` when nothing needed masking.
    pub fn redact_result(&self, result: &str) -> Option<String> {
        if !self.needs_masking(result)? {
            return None;
        }
        let mut value: Value = serde_json::from_str(result).ok()?;
        // `_meta` is masked like the rest (a backend can put anything there).
        let counts = self.mask(&mut value);
        let object = value.as_object_mut()?;
        if counts.is_empty() {
            // The scan saw a string to mask that the parsed value does not hold: a key given
            // twice, whose first value a client's parser might read. The value as parsed goes
            // on instead of the text.
            return Some(value.to_string());
        }
        let mut meta = object.remove("_meta").filter(Value::is_object).unwrap_or_else(|| json!({}));
        let total: u64 = counts.values().sum();
        meta["relay/redacted"] = json!({"total": total, "by_kind": counts});
        object.insert("_meta".into(), meta);
        Some(value.to_string())
    }
}

/// What each rule's matches must hold: an e-mail address its `@`, any other rule one of the
/// literals its matches start with (`regex-syntax`'s extraction, which spells out case
/// variants); `None` when a rule's matches may start with too many strings, or any string.
fn needed_literals(rules: &[Rule]) -> Option<Vec<String>> {
    let mut needed = std::collections::BTreeSet::new();
    for rule in rules {
        if rule.kind == "email" && rule.regex.as_str() == EMAIL {
            needed.insert("@".to_string());
            continue;
        }
        let hir = regex_syntax::Parser::new().parse(rule.regex.as_str()).ok()?;
        let prefixes = regex_syntax::hir::literal::Extractor::new().extract(&hir);
        for literal in prefixes.literals()? {
            let literal = std::str::from_utf8(literal.as_bytes()).ok().filter(|l| !l.is_empty())?;
            needed.insert(literal.to_string());
        }
    }
    (needed.len() <= MAX_NEEDED).then(|| needed.into_iter().collect())
}

/// What an object is, by its keys alone (so that the walk and the [`Scan`], which meets the keys
/// in any order, agree): resource contents (`uri`) hold base64 data in `blob`, which a pattern
/// could match by chance and masking would break, and contents and content blocks (`uri`,
/// `type`) a `mimeType`. Only there are those two left as they are: elsewhere (a
/// `structuredContent` field named `blob`) they are content like any other.
#[derive(Clone, Copy, Default)]
struct ContentItem {
    has_uri: bool,
    has_type: bool,
}

impl ContentItem {
    fn of<'k>(keys: impl Iterator<Item = &'k str>) -> Self {
        keys.fold(Self::default(), |item, key| item.with(key))
    }

    fn with(self, key: &str) -> Self {
        Self { has_uri: self.has_uri || key == "uri", has_type: self.has_type || key == "type" }
    }

    /// Whether the value under `key` is left unmasked.
    fn skips(self, key: &str) -> bool {
        match key {
            "blob" => self.has_uri,
            "mimeType" => self.has_uri || self.has_type,
            _ => false,
        }
    }
}

/// Reads one JSON value as [`Masker::walk`] would walk it, without keeping it: whether any of
/// the strings the walk visits matches a rule. Strings without escapes are searched where they
/// lie in the text.
struct Scan<'m> {
    any: &'m RegexSet,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, text: &str) -> Result<bool, E> {
        Ok(self.any.is_match(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(item) = items.next_element_seed(Scan { any: self.any })? {
            found |= item;
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        // Whether a key or value outside `blob` and `mimeType` needs a rule, and whether the
        // values under those two would: which counts is known only once every key was read.
        let (mut found, mut in_blob, mut in_mime_type) = (false, false, false);
        let mut item = ContentItem::default();
        while let Some(key) = map.next_key_seed(KeySeed { any: self.any })? {
            item = item.with(key.name.as_str());
            found |= key.matches;
            if item.skips(key.name.as_str()) {
                // Known already (`uri` and `type` come first in most): not read at all.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(Scan { any: self.any })?;
            match key.name {
                KeyName::Blob => in_blob |= value,
                KeyName::MimeType => in_mime_type |= value,
                _ => found |= value,
            }
        }
        Ok(found || (in_blob && !item.skips("blob")) || (in_mime_type && !item.skips("mimeType")))
    }
}

/// An object's key as the scan needs it: whether it names one of the keys [`ContentItem`]
/// looks at, and whether a rule matches it.
struct SeenKey {
    name: KeyName,
    matches: bool,
}

/// The keys that decide or are decided by [`ContentItem`].
#[derive(Clone, Copy, PartialEq)]
enum KeyName {
    Uri,
    Type,
    Blob,
    MimeType,
    Other,
}

impl KeyName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Uri => "uri",
            Self::Type => "type",
            Self::Blob => "blob",
            Self::MimeType => "mimeType",
            Self::Other => "",
        }
    }
}

/// Reads an object's key as a [`SeenKey`].
struct KeySeed<'m> {
    any: &'m RegexSet,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = SeenKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<SeenKey, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = SeenKey;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<SeenKey, E> {
        let name = match key {
            "uri" => KeyName::Uri,
            "type" => KeyName::Type,
            "blob" => KeyName::Blob,
            "mimeType" => KeyName::MimeType,
            _ => KeyName::Other,
        };
        Ok(SeenKey { name, matches: self.any.is_match(key) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        let settings: Settings = serde_json::from_str(r#"{"patterns": {"ticket": "TICKET-[0-9]+"}}"#).unwrap();
        Masker::new(&settings).unwrap()
    }

    #[test]
    fn masks_secrets_emails_and_configured_patterns_and_counts_them() {
        let result = json!({
            "content": [{"type": "text", "text": "key sk-proj-abcdefghijklmnopqrstuvwx, mail ann@example.com, TICKET-42"}],
            "structuredContent": {"token": "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "aws": "AKIAABCDEFGHIJKLMNOP"},
            "_meta": {"kept": true},
        });
        let redacted: Value = serde_json::from_str(&masker().redact_result(&result.to_string()).unwrap()).unwrap();
        let text = redacted["content"][0]["text"].as_str().unwrap();
        assert_eq!(text, "key [REDACTED:api_key], mail [REDACTED:email], [REDACTED:ticket]");
        assert_eq!(redacted["structuredContent"]["token"], "[REDACTED:github_token]");
        assert_eq!(redacted["structuredContent"]["aws"], "[REDACTED:aws_key]");
        assert_eq!(redacted["_meta"]["kept"], true);
        assert_eq!(redacted["_meta"]["relay/redacted"]["total"], 5);
        assert_eq!(redacted["_meta"]["relay/redacted"]["by_kind"]["email"], 1);
    }

    #[test]
    fn a_clean_result_passes_and_a_bad_pattern_is_refused() {
        assert_eq!(masker().redact_result(r#"{"content": [{"type": "text", "text": "nothing here"}]}"#), None);
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
        let bearer = format!("Authorization: Bearer {}", "a".repeat(24));
        let mut value = json!([jwt, bearer, "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"]);
        let counts = masker().mask(&mut value);
        assert_eq!(value, json!(["[REDACTED:jwt]", "Authorization: [REDACTED:bearer]", "[REDACTED:private_key]"]));
        assert_eq!(counts.values().sum::<u64>(), 3);
        let bad: Settings = serde_json::from_str(r#"{"patterns": {"x": "("}}"#).unwrap();
        assert!(Masker::new(&bad).is_err());
        assert!(serde_json::from_str::<Settings>(r#"{"emails": false, "secretz": true}"#).is_err());
    }

    #[test]
    fn non_ascii_text_is_searched_and_masked_like_ascii() {
        let key = "sk-ant-abcdefghijklmnopqrstuvwx";
        let mut value = json!([
            format!("clé: {key} ✓, écrire à ann@example.com"),
            format!("é{key}"),
            "ünïcødé ✓ nothing to mask, not even bearer or xox- or eyJ",
        ]);
        let counts = masker().mask(&mut value);
        assert_eq!(value[0], "clé: [REDACTED:api_key] ✓, écrire à [REDACTED:email]");
        // A non-ASCII letter is not a word character to the ASCII boundary: masked too.
        assert_eq!(value[1], "é[REDACTED:api_key]");
        assert_eq!(value[2], "ünïcødé ✓ nothing to mask, not even bearer or xox- or eyJ");
        assert_eq!(counts, BTreeMap::from([("api_key".to_owned(), 2), ("email".to_owned(), 1)]));
        // Still a word boundary before every shape: a key inside a longer word is left.
        let mut inside = json!(format!("ask{key}"));
        assert!(masker().mask(&mut inside).is_empty(), "{inside}");
    }

    #[test]
    fn the_scan_finds_what_the_walk_would_mask() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwx";
        let cases = [
            (r#"{"content": [{"type": "text", "text": "nothing here"}]}"#, Some(false)),
            (r#"{"content": [{"type": "text", "text": "mail ann@example.com"}]}"#, Some(true)),
            // Only the string the escape spells out matches: read unescaped, as the walk does.
            (r#"{"content": [{"type": "text", "text": "mail ann\u0040example.com\n"}]}"#, Some(true)),
            (
                r#"{"contents": [{"uri": "mem://b", "blob": "AKIAABCDEFGHIJKLMNOP", "mimeType": "a@b.io"}]}"#,
                Some(false),
            ),
            // Keys are masked too.
            (r#"{"ann@example.com": 1, "n": [1.5, null, true, {"deep": []}]}"#, Some(true)),
            (r#"{"n": [1.5, null, true, {"deep": []}]}"#, Some(false)),
            // `blob` and `mimeType` are left only in content items, whatever the key order.
            (r#"{"blob": "AKIAABCDEFGHIJKLMNOP", "mimeType": "a@b.io", "uri": "mem://b"}"#, Some(false)),
            (r#"{"type": "image", "data": "", "mimeType": "a@b.io"}"#, Some(false)),
            (r#"{"mimeType": "a@b.io", "type": "image"}"#, Some(false)),
            (r#"{"structuredContent": {"blob": "AKIAABCDEFGHIJKLMNOP"}}"#, Some(true)),
            (r#"{"structuredContent": {"mimeType": "a@b.io", "kind": "x"}}"#, Some(true)),
            (r#"{"type": "x", "blob": "AKIAABCDEFGHIJKLMNOP"}"#, Some(true)),
            (r#"{"structuredContent": {"deep": {"list": [1, "x", "AKIAABCDEFGHIJKLMNOP"]}}}"#, Some(true)),
            (r#"["not an object", "but scanned alike"]"#, Some(false)),
            (r#"{"content": [] } trailing"#, None),
            (r#"{"content": ["#, None),
        ];
        let masker = masker();
        for (result, expected) in cases {
            assert_eq!(masker.needs_masking(result), expected, "{result}");
            if let Some(found) = expected {
                let mut value: Value = serde_json::from_str(result).unwrap();
                assert_eq!(!masker.mask(&mut value).is_empty(), found, "{result}");
            }
        }
        let call = json!({"content": [{"type": "text", "text": format!("key {key}")}]}).to_string();
        assert!(masker.redact_result(&call).is_some_and(|redacted| !redacted.contains(key)));
    }

    #[test]
    fn a_secret_under_a_key_given_twice_does_not_pass() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwx";
        let result = format!(r#"{{"content": [{{"type": "text", "text": "{key}"}}], "content": []}}"#);
        let passed = masker().redact_result(&result).expect("not passed on as it came");
        assert!(!passed.contains(key), "{passed}");
        assert_eq!(serde_json::from_str::<Value>(&passed).unwrap(), json!({"content": []}));
    }

    #[test]
    fn every_string_is_masked_but_base64_data() {
        let read = json!({"contents": [
            {"uri": "mailto:ann@example.com", "mimeType": "text/plain", "text": "write to ann@example.com"},
            {"uri": "mem://b", "blob": "AKIAABCDEFGHIJKLMNOP"},
        ]});
        let redacted: Value = serde_json::from_str(&masker().redact_result(&read.to_string()).unwrap()).unwrap();
        assert_eq!(redacted["contents"][0]["text"], "write to [REDACTED:email]");
        assert_eq!(redacted["contents"][0]["uri"], "mailto:[REDACTED:email]");
        assert_eq!(redacted["contents"][1]["blob"], "AKIAABCDEFGHIJKLMNOP");
        let key = "sk-proj-abcdefghijklmnopqrstuvwx";
        let call = json!({
            "content": [{"type": "resource_link", "uri": format!("https://x.test/?key={key}"), "name": "r"}],
            "structuredContent": {"deep": {"uri": key, "list": [key]}},
            "_meta": {"debug": key},
        });
        let redacted = masker().redact_result(&call.to_string()).unwrap();
        assert!(!redacted.contains(key), "{redacted}");
        let redacted: Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(redacted["_meta"]["relay/redacted"]["total"], 4);
    }

    #[test]
    fn keys_are_masked_and_a_masked_key_taken_already_is_numbered() {
        let mut value = json!({"by_user": {"ann@example.com": 1, "bob@example.com": 2, "plain": 3}});
        let counts = masker().mask(&mut value);
        assert_eq!(value, json!({"by_user": {"[REDACTED:email]": 1, "[REDACTED:email] #2": 2, "plain": 3}}));
        assert_eq!(counts, BTreeMap::from([("email".to_owned(), 2)]));
        let mut field = json!({"structuredContent": {"blob": "AKIAABCDEFGHIJKLMNOP", "mimeType": "ann@example.com"}});
        assert_eq!(masker().mask(&mut field).values().sum::<u64>(), 2, "{field}");
    }

    #[test]
    fn every_match_holds_one_of_the_named_literals() {
        let masker = masker();
        let needed = masker.needed_literals().expect("every built-in rule needs a few literals");
        for literal in
            ["@", "sk-", "eyJ", "-----BEGIN ", "bearer", "Bearer", "BEARER", "ghp_", "AKIA", "xoxb-", "TICKET-4"]
        {
            assert!(needed.iter().any(|l| l == literal), "{literal} missing from {needed:?}");
        }
        let samples = [
            "key sk-proj-abcdefghijklmnopqrstuvwx, mail ann@example.com, TICKET-42",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB AKIAABCDEFGHIJKLMNOP",
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz",
            "Authorization: bEaReR aaaaaaaaaaaaaaaaaaaaaaaa",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            "xoxb-0123456789-abcdef AIzaSyA1234567890abcdefghijklmnopqrstu",
        ];
        for sample in samples {
            let mut value = json!([sample]);
            assert!(!masker.mask(&mut value).is_empty(), "{sample} is masked");
            for rule in &masker.rules {
                for found in rule.regex.find_iter(sample) {
                    let text = found.as_str();
                    assert!(needed.iter().any(|l| text.contains(l.as_str())), "{} match {text}", rule.kind);
                }
            }
        }
        // A rule whose matches may start with too many strings: every result is read.
        let digits: Settings = serde_json::from_str(r#"{"patterns": {"phone": "\\d{3}-\\d{4}"}}"#).unwrap();
        assert_eq!(Masker::new(&digits).unwrap().needed_literals(), None);
        let none: Settings = serde_json::from_str(r#"{"secrets": false, "emails": false}"#).unwrap();
        assert_eq!(Masker::new(&none).unwrap().needed_literals(), Some(&[][..]));
    }
}
