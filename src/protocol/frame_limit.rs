//! How large a device frame may be. Every frame is held to 16 KiB except `BootNotification`,
//! whose snapshot grows with the locker: the largest locker the admin API accepts
//! (`domain::MAX_COMPARTMENTS`, 1,000 compartments, about 48 KiB of snapshot) must be able to
//! boot. The WebSocket layer is configured with the boot limit, so anything larger is refused
//! from the WebSocket frame header, before its payload is buffered; between the two limits,
//! the action is read from the head of the frame (`[2, "<id>", "<action>", …`) before any
//! JSON parsing, so a large frame that is not a boot costs no parsing.

/// Largest text frame a device may send, for every action but `BootNotification`.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// Largest `BootNotification` frame: room for 1,000 compartments with generous whitespace.
pub const MAX_BOOT_FRAME_BYTES: usize = 128 * 1024;

/// How many bytes at the start of a frame are read to find its action: a call's head is
/// `[2, "<id of at most 64>", "BootNotification",` plus whitespace.
const HEAD_BYTES: usize = 256;

/// Whether a text frame of this content is within its limit.
pub fn within_limit(text: &str) -> bool {
    text.len() <= MAX_FRAME_BYTES || (text.len() <= MAX_BOOT_FRAME_BYTES && is_boot_call(text))
}

/// Whether the frame starts as a `BootNotification` call. Reads only the head; a head that is
/// not plainly a boot call (escapes in the id, odd layout) is not one.
fn is_boot_call(text: &str) -> bool {
    let head = &text.as_bytes()[..text.len().min(HEAD_BYTES)];
    let Some(rest) = [&b"["[..], b"2", b",", b"\""]
        .iter()
        .try_fold(head, |rest, token| eat(rest, token))
    else {
        return false;
    };
    // The message id: printable ASCII without quotes or escapes (section 3 of the protocol).
    let Some(end) = rest.iter().position(|b| *b == b'"') else {
        return false;
    };
    if rest[..end].contains(&b'\\') {
        return false;
    }
    [&b","[..], b"\"BootNotification\"", b","]
        .iter()
        .try_fold(&rest[end + 1..], |rest, token| eat(rest, token))
        .is_some()
}

/// Skips whitespace, then `token`; what follows it.
fn eat<'a>(rest: &'a [u8], token: &[u8]) -> Option<&'a [u8]> {
    rest.trim_ascii_start().strip_prefix(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad(head: &str, to: usize) -> String {
        let mut s = head.to_string();
        s.push_str(&" ".repeat(to.saturating_sub(head.len() + 2)));
        s.push_str("}]");
        s
    }

    #[test]
    fn small_frames_always_pass() {
        assert!(within_limit("[2, \"1\", \"Heartbeat\", {}]"));
        assert!(within_limit(&pad("[2, \"1\", \"Heartbeat\", {", MAX_FRAME_BYTES)));
    }

    #[test]
    fn only_boot_may_be_larger() {
        let boot = pad("[2,\"q7Fz-1\",\"BootNotification\",{", MAX_FRAME_BYTES + 1);
        assert!(within_limit(&boot));
        let spaced = pad(" [ 2 , \"q7Fz-1\" ,\n \"BootNotification\" , {", 100_000);
        assert!(within_limit(&spaced));
        assert!(!within_limit(&pad(
            "[2,\"q7Fz-1\",\"BootNotification\",{",
            MAX_BOOT_FRAME_BYTES + 1
        )));
        for head in [
            "[2,\"1\",\"Heartbeat\",{",
            "[3,\"1\",\"BootNotification\",{",
            "[2,\"a\\\"b\",\"BootNotification\",{",
            "[2,\"1\",\"BootNotificationX\",{",
            "{\"BootNotification\": [",
            "[2,\"1\"",
        ] {
            assert!(!within_limit(&pad(head, MAX_FRAME_BYTES + 1)), "{head}");
        }
    }
}
