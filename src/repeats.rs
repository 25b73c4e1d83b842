//! Member names given twice in one JSON object, in the variables that configure the proxy.
//!
//! serde_json's `Value` keeps the last of a repeated name and says nothing, so an operator who
//! retires a key by adding `"enabled": false` to an entry that still says `"enabled": true`
//! further on leaves it live. The variables are read as `Value`s still; this says what that
//! reading dropped, so that they can be refused.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A step from the top of a document towards the object that repeats a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Index(usize),
    Member(String),
}

/// A name given more than once in one object (reported once for each extra time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// Where the object is, from the top of the document.
    pub path: Vec<Step>,
    pub name: String,
}

impl Repeat {
    /// `"name" is given twice`, and where, leaving out the first `skip` steps of the path,
    /// which the caller names in its own words (an entry's index and id, an alias).
    pub fn describe(&self, skip: usize) -> String {
        let mut text = format!("{:?} is given twice", self.name);
        let rest = self.path.get(skip..).unwrap_or_default();
        if !rest.is_empty() {
            text.push_str(" in ");
            for (n, step) in rest.iter().enumerate() {
                match step {
                    Step::Index(index) => text.push_str(&format!("[{index}]")),
                    Step::Member(name) if n == 0 => text.push_str(&format!("{name:?}")),
                    Step::Member(name) => text.push_str(&format!(".{name:?}")),
                }
            }
        }
        text
    }
}

/// Every repeated member name in `json`, at any depth, in the order written. Invalid JSON is
/// not this function's to report: the caller's own parse says what is wrong with it.
pub fn repeats(json: &str) -> Vec<Repeat> {
    let mut found = Vec::new();
    let walk = Walk {
        path: &mut Vec::new(),
        found: &mut found,
    };
    // serde_json's recursion limit bounds the walk's depth as it bounds a `Value`'s.
    let _ = walk.deserialize(&mut serde_json::Deserializer::from_str(json));
    found
}

/// The repeats of a document that is an object of named entries (aliases, prices), each
/// named by its entry, as `{prefix}"entry": …`.
pub fn by_entry(json: &str, prefix: &str) -> Vec<String> {
    repeats(json)
        .into_iter()
        .map(|r| match r.path.first() {
            Some(Step::Member(entry)) => format!("{prefix}{entry:?}: {}", r.describe(1)),
            _ => format!("{prefix}{:?} is given twice", r.name),
        })
        .collect()
}

struct Walk<'a> {
    path: &'a mut Vec<Step>,
    found: &'a mut Vec<Repeat>,
}

impl Walk<'_> {
    /// The walk one step deeper; the caller pops the step when the value has been read.
    fn step_in(&mut self, step: Step) -> Walk<'_> {
        self.path.push(step);
        Walk {
            path: self.path,
            found: self.found,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        for index in 0.. {
            let more = seq.next_element_seed(self.step_in(Step::Index(index)))?;
            self.path.pop();
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                let path = self.path.clone();
                self.found.push(Repeat {
                    path,
                    name: name.clone(),
                });
            }
            map.next_value_seed(self.step_in(Step::Member(name)))?;
            self.path.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_repeat_where_it_is_and_nothing_else() {
        let json = r#"[{"id":"x","enabled":false,"models":[{"a":1,"a":2}],"enabled":true},
            {"id":"y","key":"k","k\u0065y":"k2","key":"k3"}, "enabled", 1.5, null, true]"#;
        let found: Vec<String> = repeats(json).iter().map(|r| r.describe(0)).collect();
        assert_eq!(
            found,
            [
                "\"a\" is given twice in [0].\"models\"[0]",
                "\"enabled\" is given twice in [0]",
                "\"key\" is given twice in [1]",
                "\"key\" is given twice in [1]",
            ]
        );
        assert_eq!(repeats(json)[1].path, [Step::Index(0)]);
        assert_eq!(
            repeats(r#"{"flash":{"defaults":{"x":1,"x":1}}}"#)[0].describe(1),
            "\"x\" is given twice in \"defaults\""
        );
        assert!(repeats(r#"{"a":{"b":1},"b":{"a":[{"a":1},{"a":2}]}}"#).is_empty());
        assert!(repeats("{nope").is_empty());
    }
}
