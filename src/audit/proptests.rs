//! The audit classifier and redaction see every statement a client sends: any text, no panic.

use proptest::prelude::*;

proptest! {
    #[test]
    fn classifier_and_redaction_never_panic(
        sql in prop_oneof![
            "[^\u{0}]{0,80}",
            "(?i)(select|with|explain|show|begin|alter role|create user|set|copy|rollback|to|call|/\\*|--|'|\\$\\$|;| ){0,12}",
        ],
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let _ = super::is_read_only(sql.as_bytes());
        let _ = super::is_read_only(&bytes);
        let _ = super::redact(&sql);
        let _ = super::tx_hints(sql.as_bytes());
        let _ = super::tx_hints(&bytes);
    }
}
