//! The JSON capabilities of `VFIO_USER_VERSION`: checking the client's and
//! writing ours.
//!
//! The `vfio_user` crate's server unwraps the NUL terminator (a panic on a
//! missing one), sizes its buffer from the peer's header and rejects any
//! capability it does not model with an errno of 0. Here the text is bounded,
//! the known fields are checked for type and range, and unknown ones are
//! ignored as the specification's forward compatibility asks.

use serde_json::{Map, Value};

/// Largest version data (JSON text and NUL) accepted; QEMU sends about 150 bytes.
pub const MAX_VERSION_DATA: usize = 4096;
/// Most descriptors a message may carry (the kernel's `SCM_MAX_FD`).
const SCM_MAX_FD: u64 = 253;
/// The page size DMA mappings use.
const PAGE_SIZE: u64 = 4096;

/// Why the client's version data was refused.
#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    /// Longer than [`MAX_VERSION_DATA`].
    #[error("version data of {0} bytes exceeds the {MAX_VERSION_DATA}-byte limit")]
    TooLong(usize),
    /// No terminating NUL.
    #[error("version data is not NUL-terminated")]
    NoNul,
    /// A NUL before the end.
    #[error("version data has a NUL byte at {0}, before its end")]
    InteriorNul(usize),
    /// Not UTF-8.
    #[error("version data is not UTF-8")]
    NotUtf8,
    /// Not JSON (or nested deeper than serde_json's recursion limit).
    #[error("version data is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field of the wrong type.
    #[error("capability {field} must be {expected}")]
    Type {
        /// Dotted path of the field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A number out of range.
    #[error("capability {field} = {value} is out of range ({range})")]
    Range {
        /// Dotted path of the field.
        field: &'static str,
        /// The value sent.
        value: u64,
        /// The accepted range.
        range: &'static str,
    },
}

/// What the server keeps of the client's capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCaps {
    /// Descriptors the client accepts per message.
    pub max_msg_fds: u32,
    /// Largest region read or write the client sends or accepts.
    pub max_data_xfer_size: u32,
}

impl Default for ClientCaps {
    /// The specification's defaults for absent fields.
    fn default() -> Self {
        Self {
            max_msg_fds: 1,
            max_data_xfer_size: 1 << 20,
        }
    }
}

/// Checks the version data that follows major and minor in the client's
/// `VERSION` (empty: no capabilities).
pub fn parse_client(data: &[u8]) -> Result<ClientCaps, CapsError> {
    if data.is_empty() {
        return Ok(ClientCaps::default());
    }
    if data.len() > MAX_VERSION_DATA {
        return Err(CapsError::TooLong(data.len()));
    }
    let Some((0, text)) = data.split_last() else {
        return Err(CapsError::NoNul);
    };
    if let Some(at) = text.iter().position(|&b| b == 0) {
        return Err(CapsError::InteriorNul(at));
    }
    let text = std::str::from_utf8(text).map_err(|_| CapsError::NotUtf8)?;
    let value: Value = serde_json::from_str(text)?;
    let top = object(&value, "(top level)")?;
    let mut caps = ClientCaps::default();
    let Some(c) = top.get("capabilities") else {
        return Ok(caps);
    };
    let c = object(c, "capabilities")?;
    if let Some(v) = c.get("max_msg_fds") {
        caps.max_msg_fds = number(v, "max_msg_fds", 1, SCM_MAX_FD, "1 to 253")? as u32;
    }
    if let Some(v) = c.get("max_data_xfer_size") {
        caps.max_data_xfer_size = number(
            v,
            "max_data_xfer_size",
            1,
            u64::from(u32::MAX),
            "1 to 2^32-1",
        )? as u32;
    }
    if let Some(v) = c.get("max_dma_maps") {
        number(v, "max_dma_maps", 1, u64::from(u32::MAX), "1 to 2^32-1")?;
    }
    if let Some(v) = c.get("pgsizes") {
        let sizes = number(v, "pgsizes", 1, u64::MAX, "a non-zero mask")?;
        if sizes & PAGE_SIZE == 0 {
            return Err(CapsError::Range {
                field: "pgsizes",
                value: sizes,
                range: "a mask including 4096",
            });
        }
    }
    if let Some(m) = c.get("migration") {
        let m = object(m, "migration")?;
        if let Some(v) = m.get("pgsize") {
            let size = number(v, "migration.pgsize", 4096, 1 << 30, "4 KiB to 1 GiB")?;
            if !size.is_power_of_two() {
                return Err(CapsError::Range {
                    field: "migration.pgsize",
                    value: size,
                    range: "a power of two",
                });
            }
        }
        if let Some(v) = m.get("max_bitmap_size") {
            number(v, "migration.max_bitmap_size", 1, u64::MAX, "non-zero")?;
        }
    }
    if let Some(t) = c.get("twin_socket") {
        let t = object(t, "twin_socket")?;
        if t.get("supported").is_some_and(|v| !v.is_boolean()) {
            return Err(CapsError::Type {
                field: "twin_socket.supported",
                expected: "a boolean",
            });
        }
    }
    if c.get("write_multiple").is_some_and(|v| !v.is_boolean()) {
        return Err(CapsError::Type {
            field: "write_multiple",
            expected: "a boolean",
        });
    }
    Ok(caps)
}

fn object<'v>(v: &'v Value, field: &'static str) -> Result<&'v Map<String, Value>, CapsError> {
    v.as_object().ok_or(CapsError::Type {
        field,
        expected: "an object",
    })
}

fn number(
    v: &Value,
    field: &'static str,
    min: u64,
    max: u64,
    range: &'static str,
) -> Result<u64, CapsError> {
    let n = v.as_u64().ok_or(CapsError::Type {
        field,
        expected: "a non-negative integer",
    })?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(CapsError::Range {
            field,
            value: n,
            range,
        })
    }
}

/// The server's version data (JSON and NUL): what the `vfio_user` crate's
/// server sent, which QEMU accepts. `max_msg_fds` is what we accept per
/// message; `max_data_xfer_size` our region access limit.
pub fn server_data(max_msg_fds: u32, max_data_xfer_size: u32) -> Vec<u8> {
    let json = serde_json::json!({
        "capabilities": {
            "max_msg_fds": max_msg_fds,
            "max_data_xfer_size": max_data_xfer_size,
            "migration": { "pgsize": PAGE_SIZE },
        }
    });
    let mut data = json.to_string().into_bytes();
    data.push(0);
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn with_nul(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    #[rstest]
    #[case::empty("{}", 1, 1 << 20)]
    #[case::qemu(r#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"migration":{"pgsize":4096,"max_bitmap_size":1048576},"twin_socket":{"supported":true},"write_multiple":true}}"#, 16, 1 << 20)]
    #[case::unknown_fields(r#"{"capabilities":{"future":[1,2,{"x":null}]},"other":1}"#, 1, 1 << 20)]
    fn accepted(#[case] json: &str, #[case] fds: u32, #[case] xfer: u32) {
        let caps = parse_client(&with_nul(json)).unwrap();
        assert_eq!((caps.max_msg_fds, caps.max_data_xfer_size), (fds, xfer));
    }

    #[rstest]
    #[case::not_json("{capabilities")]
    #[case::array("[1]")]
    #[case::caps_string(r#"{"capabilities":"all"}"#)]
    #[case::fds_string(r#"{"capabilities":{"max_msg_fds":"16"}}"#)]
    #[case::fds_zero(r#"{"capabilities":{"max_msg_fds":0}}"#)]
    #[case::fds_huge(r#"{"capabilities":{"max_msg_fds":4294967296}}"#)]
    #[case::fds_negative(r#"{"capabilities":{"max_msg_fds":-1}}"#)]
    #[case::fds_float(r#"{"capabilities":{"max_msg_fds":1.5}}"#)]
    #[case::xfer_zero(r#"{"capabilities":{"max_data_xfer_size":0}}"#)]
    #[case::xfer_huge(r#"{"capabilities":{"max_data_xfer_size":18446744073709551615}}"#)]
    #[case::pgsizes_no_4k(r#"{"capabilities":{"pgsizes":8192}}"#)]
    #[case::migration_number(r#"{"capabilities":{"migration":7}}"#)]
    #[case::migration_pgsize_odd(r#"{"capabilities":{"migration":{"pgsize":12288}}}"#)]
    #[case::migration_pgsize_absurd(
        r#"{"capabilities":{"migration":{"pgsize":18446744073709551615}}}"#
    )]
    #[case::twin_not_bool(r#"{"capabilities":{"twin_socket":{"supported":1}}}"#)]
    fn refused(#[case] json: &str) {
        assert!(parse_client(&with_nul(json)).is_err(), "{json}");
    }

    #[test]
    fn hostile_framing_is_refused() {
        assert!(matches!(parse_client(b"{}"), Err(CapsError::NoNul)));
        assert!(matches!(
            parse_client(b"{}\0{}\0"),
            Err(CapsError::InteriorNul(2))
        ));
        assert!(matches!(
            parse_client(b"{\"a\":\"\xff\"}\0"),
            Err(CapsError::NotUtf8)
        ));
        let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
        assert!(matches!(
            parse_client(&with_nul(&deep)),
            Err(CapsError::TooLong(_))
        ));
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(matches!(
            parse_client(&with_nul(&deep)),
            Err(CapsError::Json(_))
        ));
    }

    #[test]
    fn server_data_is_json_with_a_nul() {
        let data = server_data(1, 1 << 20);
        assert_eq!(data.last(), Some(&0));
        assert_eq!(parse_client(&data).unwrap().max_data_xfer_size, 1 << 20);
    }
}
