//! `If-Match` on config writes: the forms accepted, and whether a condition names the current version.

/// The accepted forms, for error messages and the API description.
pub const IF_MATCH_FORMS: &str =
    "expected \"*\" or config versions as N, \"N\" or W/\"N\" (comma-separated for several)";

/// A parsed `If-Match` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the service must currently have a config (RFC 9110 §13.1.1).
    Any,
    /// One of these config versions must be the current one.
    Versions(Vec<u64>),
}

impl IfMatch {
    /// Parses the header value. Anything that is not one of the accepted forms is an error, so
    /// a condition we cannot read refuses the write instead of being ignored.
    pub fn parse(raw: &str) -> Result<IfMatch, String> {
        let refuse = |why: &str| Err(format!("{raw:?} is not allowed ({why}); {IF_MATCH_FORMS}"));
        if raw.trim() == "*" {
            return Ok(IfMatch::Any);
        }
        let mut versions = Vec::new();
        // Empty list elements are allowed by HTTP's list syntax (RFC 9110 §5.6.1) and name nothing.
        for tag in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return refuse("\"*\" must stand alone");
            }
            let opaque = tag.strip_prefix("W/").unwrap_or(tag);
            let digits = match opaque.strip_prefix('"') {
                Some(rest) => match rest.strip_suffix('"') {
                    Some(inner) => inner,
                    None => return refuse("unterminated quote"),
                },
                None => opaque,
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return refuse("a version is a non-negative integer");
            }
            match digits.parse() {
                Ok(v) => versions.push(v),
                Err(_) => return refuse("version too large"),
            }
        }
        if versions.is_empty() {
            return refuse("empty");
        }
        Ok(IfMatch::Versions(versions))
    }

    /// Whether a write may go ahead; `current` is the service's config version, None without one.
    pub fn holds(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (IfMatch::Any, current) => current.is_some(),
            (IfMatch::Versions(list), Some(v)) => list.contains(&v),
            (IfMatch::Versions(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_forms() {
        for (raw, want) in [
            ("3", vec![3]),
            (" \"3\" ", vec![3]),
            ("W/\"3\"", vec![3]),
            ("0", vec![0]),
            ("\"1\", W/\"5\" ,7", vec![1, 5, 7]),
            ("1,,2,", vec![1, 2]),
        ] {
            assert_eq!(IfMatch::parse(raw), Ok(IfMatch::Versions(want)), "{raw}");
        }
        assert_eq!(IfMatch::parse("*"), Ok(IfMatch::Any));
        assert_eq!(IfMatch::parse(" * "), Ok(IfMatch::Any));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_forms() {
        for raw in [
            "",
            " ",
            ",",
            "abc",
            "-1",
            "\"-1\"",
            "1.0",
            "+1",
            "\"3",
            "3\"",
            "W/3x",
            "W/",
            "\"\"",
            "*, 1",
            "1, *",
            "1 2",
            "99999999999999999999",
            "\"v3\"",
            "0x1",
        ] {
            let e = IfMatch::parse(raw).unwrap_err();
            assert!(e.contains("N, \"N\" or W/\"N\""), "{raw}: {e}");
        }
    }

    #[test]
    fn matching() {
        let any = IfMatch::Any;
        assert!(any.holds(Some(0)));
        assert!(!any.holds(None), "* needs a current config");
        let list = IfMatch::Versions(vec![2, 4]);
        assert!(list.holds(Some(4)));
        assert!(!list.holds(Some(3)));
        assert!(!list.holds(None));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_only_digits_make_versions(s in ".{0,40}") {
            if let Ok(IfMatch::Versions(v)) = IfMatch::parse(&s) {
                prop_assert!(!v.is_empty());
                prop_assert!(s.bytes().any(|b| b.is_ascii_digit()));
            }
        }

        #[test]
        fn a_version_matches_itself_in_every_form(v: u64, other: u64) {
            for raw in [v.to_string(), format!("\"{v}\""), format!("W/\"{v}\""), format!("{other}, \"{v}\"")] {
                prop_assert!(IfMatch::parse(&raw).unwrap().holds(Some(v)), "{}", raw);
            }
            prop_assume!(v != other);
            prop_assert!(!IfMatch::parse(&other.to_string()).unwrap().holds(Some(v)));
        }
    }
}
