//! The admin console's command parser sees any SQL text a console user sends: no panic.

use proptest::prelude::*;

proptest! {
    #[test]
    fn admin_parser_never_panics(
        words in proptest::collection::vec(
            prop_oneof![
                "(?i)show|pause|resume|kill|reload|shutdown|set|enable|disable|reconnect|wait_close",
                "(?i)pools|clients|servers|stats|config|databases|users|lists|version",
                "[^\u{0}]{0,8}",
                Just(";".to_string()),
                Just("'".to_string()),
                Just("\"".to_string()),
                Just("=".to_string()),
            ],
            0..6,
        ),
    ) {
        let _ = super::parse(&words.join(" "));
    }
}
