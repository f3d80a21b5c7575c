//! Topic names, checked at compile time by the broker's rule (`validate_topic_name` in
//! rustmq-broker): 1 to 249 characters of `[A-Za-z0-9._-]`, and neither `.` nor `..`.

/// The longest topic name the broker accepts.
pub(crate) const MAX_LEN: usize = 249;

/// Checks `name` (the value of `option`, for messages); the error says what is wrong.
pub(crate) fn check(option: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`{option}` must not be empty"));
    }
    if name == "." || name == ".." {
        return Err(format!("`{option}` must not be `.` or `..`"));
    }
    if name.len() > MAX_LEN {
        return Err(format!(
            "`{option}` is {} characters long; topic names have at most {MAX_LEN}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid character {bad:?} in `{option}`: topic names use only ASCII letters, \
             digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_broker_alphabet() {
        for ok in [
            "a",
            "orders",
            "orders.v1",
            "A_b-c",
            "..x",
            &"x".repeat(MAX_LEN),
        ] {
            assert_eq!(check("name", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_the_broker_rejects() {
        for bad in [
            "",
            ".",
            "..",
            "or ders",
            "orders/1",
            "ordèrs",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(check("name", bad).is_err(), "{bad}");
        }
        assert_eq!(
            check("dead_letter", "a b"),
            Err(
                "invalid character ' ' in `dead_letter`: topic names use only ASCII letters, \
                 digits, `.`, `_` and `-`"
                    .to_string()
            )
        );
    }
}
