//! How custom properties are kept in rollup rows: one row per (key, value), its value the key,
//! a separator and the value. Shared by the aggregator that writes them and the query role
//! that reads them.

/// Separates a property's key from its value in a property row's value.
pub const SEPARATOR: char = '\u{1f}';
/// Longest property key kept in a row, bytes (longer keys are cut).
pub const KEY_BYTES: usize = 100;

/// `key` as rows keep it: cut to [`KEY_BYTES`] at a character boundary, a [`SEPARATOR`] in it
/// (only events stored before ingest refused control characters in keys) replaced.
pub fn row_key(key: &str) -> String {
    let mut end = key.len().min(KEY_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].replace(SEPARATOR, "\u{fffd}")
}

/// A property row's value before any length cap: the row key, [`SEPARATOR`], the value.
pub fn row_value(key: &str, value: &str) -> String {
    format!("{}{SEPARATOR}{value}", row_key(key))
}

/// The key and value of a property row's value; `None` without a separator.
pub fn split(row_value: &str) -> Option<(&str, &str)> {
    row_value.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_cut_at_character_boundaries() {
        let long = "é".repeat(60);
        assert_eq!(row_key(&long).len(), 100);
        assert_eq!(row_key("a\u{1f}b"), "a\u{fffd}b");
        let value = row_value("plan", "pro");
        assert_eq!(split(&value), Some(("plan", "pro")));
        assert_eq!(split("no separator"), None);
    }
}
