//! Typed module options (Prosody's `get_option_*`): conversion of raw TOML values with the
//! fallback rules a module author expects. A wrong type or out-of-range value is an
//! [`OptionError`]; the [`super::modules::ModuleContext`] logs it, naming the option, and uses the default.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why an option value was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionError {
    /// The value has the wrong type.
    #[error("expected {0}")]
    WrongType(&'static str),
    /// The value is outside the accepted range.
    #[error("must be between {min} and {max}")]
    OutOfRange {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// The value is not one of the accepted choices.
    #[error("must be one of {0}")]
    NotAllowed(String),
    /// A period could not be parsed.
    #[error("not a period (try \"30 seconds\", \"3 weeks\" or \"never\")")]
    BadPeriod,
}

/// A string option.
pub fn string(v: &toml::Value) -> Result<String, OptionError> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(OptionError::WrongType("a string")),
    }
}

/// A number option within `min..=max` (strings holding numbers are converted).
pub fn number(v: &toml::Value, min: f64, max: f64) -> Result<f64, OptionError> {
    let n = match v {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        toml::Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| OptionError::WrongType("a number"))?,
        _ => return Err(OptionError::WrongType("a number")),
    };
    if n.is_nan() || n < min || n > max {
        return Err(OptionError::OutOfRange { min, max });
    }
    Ok(n)
}

/// An integer option within `min..=max` (a fractional part is dropped).
pub fn integer(v: &toml::Value, min: i64, max: i64) -> Result<i64, OptionError> {
    let n = number(v, min as f64, max as f64)?;
    Ok(n.trunc() as i64)
}

/// A boolean option (also "yes"/"no", "true"/"false", "on"/"off").
pub fn boolean(v: &toml::Value) -> Result<bool, OptionError> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(OptionError::WrongType("true or false")),
        },
        _ => Err(OptionError::WrongType("true or false")),
    }
}

/// A list-of-strings option; a single string counts as a one-element list.
pub fn array(v: &toml::Value) -> Result<Vec<String>, OptionError> {
    match v {
        toml::Value::Array(a) => a.iter().map(string).collect(),
        toml::Value::String(s) => Ok(vec![s.clone()]),
        _ => Err(OptionError::WrongType("a list of strings")),
    }
}

/// A set option: a list with duplicates removed, in first-seen order.
pub fn set(v: &toml::Value) -> Result<Vec<String>, OptionError> {
    let mut out: Vec<String> = Vec::new();
    for s in array(v)? {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The union of a global and a host set (Prosody's `inherited_set`).
pub fn inherited_set(
    global: Option<&toml::Value>,
    host: Option<&toml::Value>,
) -> Result<Vec<String>, OptionError> {
    let mut out = match global {
        Some(g) => set(g)?,
        None => Vec::new(),
    };
    if let Some(h) = host {
        for s in set(h)? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// A path option; a relative path is resolved against `parent`.
pub fn path(v: &toml::Value, parent: &Path) -> Result<PathBuf, OptionError> {
    let s = string(v)?;
    let p = PathBuf::from(s);
    Ok(if p.is_relative() { parent.join(p) } else { p })
}

/// An enum option: one of `choices`.
pub fn choice(v: &toml::Value, choices: &[&str]) -> Result<String, OptionError> {
    let s = string(v)?;
    if choices.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(OptionError::NotAllowed(choices.join(", ")))
    }
}

/// A period option: seconds as a number, or text like "90 seconds", "3 weeks", "1d", "never"
/// (or `false`), which gives `None` (forever).
pub fn period(v: &toml::Value) -> Result<Option<Duration>, OptionError> {
    match v {
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::Integer(i) if *i >= 0 => Ok(Some(Duration::from_secs(*i as u64))),
        toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => {
            Ok(Some(Duration::from_secs_f64(*f)))
        }
        toml::Value::String(s) => parse_period(s),
        _ => Err(OptionError::BadPeriod),
    }
}

/// Parses a textual period (see [`period`]).
pub fn parse_period(s: &str) -> Result<Option<Duration>, OptionError> {
    let s = s.trim().to_ascii_lowercase();
    if s == "never" || s == "forever" {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = if num.is_empty() {
        1.0
    } else {
        num.parse().map_err(|_| OptionError::BadPeriod)?
    };
    let unit = unit.trim();
    let secs = match unit.trim_end_matches('s') {
        "" | "second" | "sec" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86_400.0,
        "w" | "week" => 604_800.0,
        "month" => 2_629_746.0,
        "y" | "year" => 31_556_952.0,
        _ => return Err(OptionError::BadPeriod),
    };
    let total = n * secs;
    if !total.is_finite() || !(0.0..=1e12).contains(&total) {
        return Err(OptionError::BadPeriod);
    }
    Ok(Some(Duration::from_secs_f64(total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::Value as V;

    #[test]
    fn periods() {
        assert_eq!(
            parse_period("3 weeks"),
            Ok(Some(Duration::from_secs(3 * 604_800)))
        );
        assert_eq!(parse_period("1d"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(
            parse_period("90 seconds"),
            Ok(Some(Duration::from_secs(90)))
        );
        assert_eq!(parse_period("2h"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(parse_period("never"), Ok(None));
        assert_eq!(period(&V::Boolean(false)), Ok(None));
        assert_eq!(period(&V::Integer(5)), Ok(Some(Duration::from_secs(5))));
        assert_eq!(parse_period("soon"), Err(OptionError::BadPeriod));
        assert_eq!(period(&V::Integer(-1)), Err(OptionError::BadPeriod));
    }

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(integer(&V::Float(3.7), 0, 10), Ok(3));
        assert_eq!(integer(&V::String("8".into()), 0, 10), Ok(8));
        assert!(matches!(
            integer(&V::Integer(11), 0, 10),
            Err(OptionError::OutOfRange { .. })
        ));
        assert!(matches!(
            number(&V::Boolean(true), 0.0, 1.0),
            Err(OptionError::WrongType(_))
        ));
    }

    #[test]
    fn strings_booleans_lists_paths_enums() {
        assert_eq!(boolean(&V::String("yes".into())), Ok(true));
        assert!(boolean(&V::Integer(1)).is_err());
        let list = V::Array(vec![
            V::String("a".into()),
            V::String("b".into()),
            V::String("a".into()),
        ]);
        assert_eq!(array(&list).unwrap().len(), 3);
        assert_eq!(set(&list).unwrap(), vec!["a", "b"]);
        let host = V::Array(vec![V::String("c".into()), V::String("a".into())]);
        assert_eq!(
            inherited_set(Some(&list), Some(&host)).unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            path(&V::String("x.pem".into()), Path::new("/etc")).unwrap(),
            PathBuf::from("/etc/x.pem")
        );
        assert_eq!(
            path(&V::String("/abs".into()), Path::new("/etc")).unwrap(),
            PathBuf::from("/abs")
        );
        assert_eq!(choice(&V::String("b".into()), &["a", "b"]), Ok("b".into()));
        assert!(choice(&V::String("z".into()), &["a", "b"]).is_err());
        assert_eq!(string(&V::Integer(3)), Ok("3".into()));
    }
}
