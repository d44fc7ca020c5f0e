//! Parse-don't-validate newtypes for names and client-chosen identifiers.

use serde::{Deserialize, Serialize};

use crate::error::{RuleError, RuleResult};

/// A username: 1 to 64 characters of `A-Z a-z 0-9 . _ @ -`, not starting with a dot, and
/// case-insensitive: it is folded to lowercase when parsed, so `Dave`, `DAVE` and `dave` are
/// one user (usernames often come from directories and e-mail addresses, where case carries no
/// meaning; folding means no two users can differ only by it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl TryFrom<String> for Username {
    type Error = RuleError;
    fn try_from(s: String) -> RuleResult<Self> {
        Username::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}

impl Username {
    pub fn parse(s: &str) -> RuleResult<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if ok {
            Ok(Username(s.to_ascii_lowercase()))
        } else {
            Err(RuleError::Invalid(format!(
                "invalid username {s:?}: use 1 to 64 characters of letters, digits, '.', '_', '@', '-'"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen identifier (device id, instance id, product name): 1 to 200 printable
/// characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatedId(String);

impl ValidatedId {
    pub fn parse(field: &str, s: &str) -> RuleResult<Self> {
        if s.trim().is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
            return Err(RuleError::Invalid(format!(
                "{field} must be 1 to 200 printable characters"
            )));
        }
        Ok(ValidatedId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_accept_common_forms_and_refuse_the_rest() {
        for ok in ["alice", "bob.smith", "svc-backend_1", "a@b.example"] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in ["", ".hidden", "with space", "slash/", long.as_str(), "é"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_fold_to_lowercase() {
        for given in ["Dave", "DAVE", "dave", "dAvE"] {
            assert_eq!(Username::parse(given).unwrap().as_str(), "dave");
        }
        assert_eq!(
            Username::parse("Alice.Smith@Example.COM").unwrap().as_str(),
            "alice.smith@example.com"
        );
        // As stored terms are read (reserved names).
        let read = Username::try_from(String::from("Bob")).unwrap();
        assert_eq!(read.as_str(), "bob");
    }

    #[test]
    fn ids_refuse_blank_and_control_characters() {
        assert!(ValidatedId::parse("device_id", "laptop-1").is_ok());
        assert!(ValidatedId::parse("device_id", "  ").is_err());
        assert!(ValidatedId::parse("device_id", "a\nb").is_err());
        assert!(ValidatedId::parse("device_id", &"d".repeat(201)).is_err());
    }
}
