//! auth_file: PgBouncer's userlist.txt, `"user" "secret"` per line.

use std::collections::HashMap;

use super::ConfigError;
use crate::auth::Secret;

/// Parse userlist text into user -> secret.
pub fn parse_userlist(text: &str, file: &str) -> Result<HashMap<String, Secret>, Vec<ConfigError>> {
    let _ = (text, file);
    Ok(HashMap::new())
}
