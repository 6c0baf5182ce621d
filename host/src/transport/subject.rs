//! The subject of a verified client certificate as the auth plugin sees it: its relative
//! distinguished names in the certificate's order, joined by `, `, each attribute `TYPE=value`
//! (several in one RDN joined by ` + `), with every character that could read as structure
//! escaped as RFC 4514 says (`,` `+` `"` `\` `<` `>` `;`, a leading `#` or space, a trailing
//! space, control characters as `\XX`). So a certificate whose one CN is `agent-7, O=Example`
//! reads `CN=agent-7\, O=Example` and can never pass for `CN=agent-7, O=Example`.

use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

/// The escaped subject of `name`.
pub fn render(name: &X509Name<'_>) -> String {
    let registry = oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let attributes: Vec<String> = rdn
                .iter()
                .map(|attribute| {
                    let kind = oid2abbrev(attribute.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attribute.attr_type().to_id_string());
                    let value = match attribute.as_str() {
                        Ok(text) => escape(text),
                        // Not a string type: its bytes in hex, which RFC 4514 marks with `#`.
                        Err(_) => format!("#{}", crate::digest::hex(attribute.attr_value().data)),
                    };
                    format!("{kind}={value}")
                })
                .collect();
            attributes.join(" + ")
        })
        .collect();
    rdns.join(", ")
}

/// An attribute value escaped as RFC 4514 section 2.4 says.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_in_values_is_escaped() {
        assert_eq!(escape("agent-7"), "agent-7");
        assert_eq!(escape("agent-7, O=Example"), "agent-7\\, O=Example");
        assert_eq!(escape("a+b;c<d>e\"f\\g"), "a\\+b\\;c\\<d\\>e\\\"f\\\\g");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" x"), "\\ x");
        assert_eq!(escape("a\nb\0"), "a\\0Ab\\00");
    }
}
