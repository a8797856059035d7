//! SQLSTATE codes pgporter itself emits (PostgreSQL Appendix A).

pub const SUCCESSFUL_COMPLETION: &str = "00000";
pub const CONNECTION_FAILURE: &str = "08006";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const QUERY_CANCELED: &str = "57014";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const INTERNAL_ERROR: &str = "XX000";
pub const SYNTAX_ERROR: &str = "42601";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const UNDEFINED_OBJECT: &str = "42704";
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
pub const CONFIG_FILE_ERROR: &str = "F0000";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
