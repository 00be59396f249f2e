use std::fmt;

use crate::Error;

const MAX_NAME_LEN: usize = 64;

fn check_name(what: &str, s: &str) -> Result<(), Error> {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    let starts_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if s.is_empty() || s.len() > MAX_NAME_LEN || !ok_chars || !starts_ok {
        return Err(Error::invalid(format!(
            "{what} '{s}' is invalid: use 1-{MAX_NAME_LEN} lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A model's unique name, e.g. `smollm2` or `minilm-l6`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// Validates a model name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check_name("model name", s)?;
        Ok(Self(s.to_owned()))
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An alias such as `production` or `staging`, pointing at one version of a model.
/// An alias is never all digits, so `name:3` (version) and `name@3` cannot be confused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AliasName(String);

impl AliasName {
    /// Validates an alias name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        check_name("alias", s)?;
        if s.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::invalid(format!(
                "alias '{s}' is invalid: an alias cannot be a number"
            )));
        }
        Ok(Self(s.to_owned()))
    }
    /// The alias as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AliasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which version of a model a reference selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The newest version.
    Latest,
    /// A version number.
    Number(i64),
    /// The version an alias points at.
    Alias(AliasName),
}

/// A reference to a model version: `name` (latest), `name:3` (version 3) or `name@production` (alias).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model.
    pub name: ModelName,
    /// The version within it.
    pub selector: VersionSelector,
}

impl ModelRef {
    /// Parses `name`, `name:N` or `name@alias`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if let Some((name, alias)) = s.split_once('@') {
            return Ok(Self {
                name: ModelName::parse(name)?,
                selector: VersionSelector::Alias(AliasName::parse(alias)?),
            });
        }
        if let Some((name, version)) = s.split_once(':') {
            let number: i64 = version.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::invalid(format!(
                    "version '{version}' in '{s}' is not a positive integer"
                ))
            })?;
            return Ok(Self {
                name: ModelName::parse(name)?,
                selector: VersionSelector::Number(number),
            });
        }
        Ok(Self {
            name: ModelName::parse(s)?,
            selector: VersionSelector::Latest,
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            VersionSelector::Latest => write!(f, "{}", self.name),
            VersionSelector::Number(n) => write!(f, "{}:{n}", self.name),
            VersionSelector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ref_parses_all_three_forms() {
        let latest = ModelRef::parse("smollm2").unwrap();
        assert_eq!(latest.selector, VersionSelector::Latest);
        let v3 = ModelRef::parse("smollm2:3").unwrap();
        assert_eq!(v3.selector, VersionSelector::Number(3));
        let prod = ModelRef::parse("smollm2@production").unwrap();
        assert_eq!(
            prod.selector,
            VersionSelector::Alias(AliasName::parse("production").unwrap())
        );
        assert_eq!(prod.to_string(), "smollm2@production");
    }

    #[test]
    fn bad_names_are_rejected_with_the_offending_text() {
        for bad in ["", "Upper", "-lead", "has space", "a/b", &"x".repeat(65)] {
            let err = ModelName::parse(bad).unwrap_err();
            assert!(err.message.contains(bad), "{}", err.message);
        }
        assert!(ModelRef::parse("m:0").is_err());
        assert!(ModelRef::parse("m:x").is_err());
        assert!(AliasName::parse("123").is_err());
    }
}
