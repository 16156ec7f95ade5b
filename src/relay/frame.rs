//! WebSocket frames (RFC 6455 §5) as bytes: just enough to relay them
//! without decoding the messages they carry.
//!
//! The relay reads frame headers (FIN, opcode, length, mask), checks them
//! against the protocol and the size limit, and hands whole frames on.
//! Server-to-client frames are unmasked on both hops of a relay, so the
//! API's frames are the very bytes to write to the client.

use std::fmt;

use bytes::{BufMut as _, BytesMut};

/// Longest payload of a control frame (ping, pong, close).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
const MAX_HEADER_BYTES: usize = 2 + 8 + 4;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a fragmented message.
    Continuation,
    /// A text message (or its first fragment).
    Text,
    /// A binary message (or its first fragment).
    Binary,
    /// The closing handshake.
    Close,
    /// A WebSocket-level ping.
    Ping,
    /// A WebSocket-level pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A frame's header, parsed from the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key, present on client-to-server frames only.
    pub mask: Option<[u8; 4]>,
    /// Bytes of the header itself.
    pub header_len: usize,
    /// Bytes of the payload that follows it.
    pub payload_len: usize,
}

impl Header {
    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }

    /// Where the payload lies in a buffer that starts with this frame.
    pub fn payload(&self) -> std::ops::Range<usize> {
        self.header_len..self.frame_len()
    }
}

/// Why a socket's bytes cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Not a valid WebSocket frame sequence (close code 1002); the text
    /// says which rule was broken.
    Protocol(&'static str),
    /// A message larger than the relay's limit (close code 1009).
    TooBig,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(rule) => write!(formatter, "protocol error: {rule}"),
            Self::TooBig => formatter.write_str("message larger than the relay's limit"),
        }
    }
}

/// Parses the header at the start of `bytes`; `None` until all of it has
/// arrived. A payload longer than `max_payload` is refused from the header
/// alone, before any of it is buffered.
pub fn parse_header(bytes: &[u8], max_payload: usize) -> Result<Option<Header>, Violation> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        // No extension is ever negotiated, so no reserved bit may be set.
        return Err(Violation::Protocol("reserved bits set"));
    }
    let fin = first & 0x80 != 0;
    let opcode = Opcode::from_bits(first & 0x0F).ok_or(Violation::Protocol("unknown opcode"))?;
    let masked = second & 0x80 != 0;
    let (length_bytes, short_length) = match second & 0x7F {
        126 => (2, None),
        127 => (8, None),
        length => (0, Some(usize::from(length))),
    };
    let mask_bytes = if masked { 4 } else { 0 };
    let header_len = 2 + length_bytes + mask_bytes;
    let Some(header) = bytes.get(..header_len) else {
        return Ok(None);
    };
    let payload_len = match short_length {
        Some(length) => length,
        None => {
            let length = header[2..2 + length_bytes]
                .iter()
                .fold(0_u64, |length, byte| length << 8 | u64::from(*byte));
            if length >> 63 != 0 {
                return Err(Violation::Protocol("64-bit length with its top bit set"));
            }
            usize::try_from(length).map_err(|_| Violation::TooBig)?
        }
    };
    if opcode.is_control() && (!fin || payload_len > MAX_CONTROL_PAYLOAD) {
        return Err(Violation::Protocol(
            "control frames are whole and at most 125 bytes",
        ));
    }
    if payload_len > max_payload {
        return Err(Violation::TooBig);
    }
    let mask = masked.then(|| {
        let key = &header[header_len - 4..];
        [key[0], key[1], key[2], key[3]]
    });
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// What [`Reader::next`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A whole frame, which fits the protocol and the size limit.
    Frame(Header),
    /// Not a whole frame yet: the buffer needs at least this many bytes.
    NeedMore(usize),
}

/// The frames one peer sends, checked across frames: who masks, how
/// messages are fragmented, how large they grow.
#[derive(Clone, Debug)]
pub struct Reader {
    peer_masks: bool,
    max_message: usize,
    /// Payload bytes so far of the fragmented message under way, if any.
    fragmented: Option<usize>,
}

impl Reader {
    /// A reader of a peer that masks its frames (a client) or not (a
    /// server), whose messages may hold at most `max_message` bytes.
    pub fn new(peer_masks: bool, max_message: usize) -> Self {
        Self {
            peer_masks,
            max_message,
            fragmented: None,
        }
    }

    /// The frame at the start of `buffer`. Nothing is remembered until the
    /// whole frame is there, so a caller asks again with more bytes after
    /// [`Next::NeedMore`].
    pub fn next(&mut self, buffer: &[u8]) -> Result<Next, Violation> {
        let Some(header) = parse_header(buffer, self.max_message)? else {
            return Ok(Next::NeedMore(buffer.len().max(2) + MAX_HEADER_BYTES));
        };
        if header.mask.is_some() != self.peer_masks {
            return Err(Violation::Protocol(if self.peer_masks {
                "a client's frame must be masked"
            } else {
                "a server's frame must not be masked"
            }));
        }
        let fragmented = match header.opcode {
            Opcode::Close | Opcode::Ping | Opcode::Pong => self.fragmented,
            Opcode::Text | Opcode::Binary => {
                if self.fragmented.is_some() {
                    return Err(Violation::Protocol("a new message inside a fragmented one"));
                }
                (!header.fin).then_some(header.payload_len)
            }
            Opcode::Continuation => {
                let so_far = self
                    .fragmented
                    .ok_or(Violation::Protocol("a continuation without a message"))?;
                let total = so_far.saturating_add(header.payload_len);
                if total > self.max_message {
                    return Err(Violation::TooBig);
                }
                (!header.fin).then_some(total)
            }
        };
        if buffer.len() < header.frame_len() {
            return Ok(Next::NeedMore(header.frame_len()));
        }
        self.fragmented = fragmented;
        Ok(Next::Frame(header))
    }
}

/// XORs `payload` with `key`, which both masks and unmasks.
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    for (index, byte) in payload.iter_mut().enumerate() {
        *byte ^= key[index % 4];
    }
}

/// Appends a frame to `out`, masked with `mask` when it goes to a server.
pub fn encode(
    out: &mut BytesMut,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let fin_bit = if fin { 0x80 } else { 0 };
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(MAX_HEADER_BYTES + payload.len());
    out.put_u8(fin_bit | opcode.bits());
    match payload.len() {
        length @ 0..=125 => out.put_u8(mask_bit | length as u8),
        length @ 126..=0xFFFF => {
            out.put_u8(mask_bit | 126);
            out.put_u16(length as u16);
        }
        length => {
            out.put_u8(mask_bit | 127);
            out.put_u64(length as u64);
        }
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key);
        }
    }
}

/// A close frame's payload: `None` when it carried no code.
pub type ClosePayload = Option<(u16, String)>;

/// Reads a close frame's (unmasked) payload: empty, or a code and a UTF-8
/// reason.
pub fn parse_close(payload: &[u8]) -> Result<ClosePayload, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("a close frame with half a code")),
        [high, low, reason @ ..] => {
            let reason = std::str::from_utf8(reason)
                .map_err(|_| Violation::Protocol("a close reason that is not UTF-8"))?;
            Ok(Some((u16::from_be_bytes([*high, *low]), reason.to_owned())))
        }
    }
}

/// A close frame's payload for `code` and `reason` (which the caller keeps
/// within the control frame's limit).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMIT: usize = 1 << 20;

    fn frame(fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> BytesMut {
        let mut out = BytesMut::new();
        encode(&mut out, fin, opcode, payload, mask);
        out
    }

    fn whole(reader: &mut Reader, bytes: &[u8]) -> Result<Header, String> {
        match reader.next(bytes) {
            Ok(Next::Frame(header)) => Ok(header),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn a_header_split_across_reads_waits_for_the_rest() {
        for (length, header_len) in [(5, 2), (300, 4), (70_000, 10)] {
            let bytes = frame(true, Opcode::Binary, &vec![7; length], None);
            let mut reader = Reader::new(false, LIMIT);
            for cut in 0..header_len {
                assert!(
                    matches!(reader.next(&bytes[..cut]), Ok(Next::NeedMore(need)) if need > cut),
                    "{length} bytes cut at {cut}"
                );
            }
            assert_eq!(
                reader.next(&bytes[..header_len + 1]),
                Ok(Next::NeedMore(header_len + length)),
                "the header is read, the payload awaited"
            );
            let header = whole(&mut reader, &bytes);
            assert_eq!(
                header.map(|header| (header.header_len, header.payload_len)),
                Ok((header_len, length))
            );
        }
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths_round_trip() {
        for length in [0, 125, 126, 65_535, 65_536, 200_000] {
            let payload = vec![b'a'; length];
            let bytes = frame(true, Opcode::Text, &payload, None);
            let header = parse_header(&bytes, LIMIT).ok().flatten();
            assert_eq!(header.map(|header| header.payload_len), Some(length));
            assert_eq!(header.map(|header| header.frame_len()), Some(bytes.len()));
        }
    }

    #[test]
    fn a_sixty_four_bit_length_with_its_top_bit_is_refused() {
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&(1_u64 << 63).to_be_bytes());
        assert!(matches!(
            parse_header(&bytes, LIMIT),
            Err(Violation::Protocol(_))
        ));
    }

    #[test]
    fn masking_round_trips_and_the_key_is_read() {
        let key = [1, 2, 3, 4];
        let bytes = frame(true, Opcode::Text, b"hello", Some(key));
        let mut reader = Reader::new(true, LIMIT);
        let header = whole(&mut reader, &bytes);
        assert_eq!(header.map(|header| header.mask), Ok(Some(key)));
        let mut payload = bytes[6..].to_vec();
        assert_ne!(payload, b"hello");
        apply_mask(&mut payload, key);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn masks_must_match_the_peers_role() {
        let masked = frame(true, Opcode::Text, b"x", Some([9; 4]));
        assert!(matches!(
            Reader::new(false, LIMIT).next(&masked),
            Err(Violation::Protocol(_))
        ));
        let unmasked = frame(true, Opcode::Text, b"x", None);
        assert!(matches!(
            Reader::new(true, LIMIT).next(&unmasked),
            Err(Violation::Protocol(_))
        ));
    }

    #[test]
    fn fragments_are_followed_and_controls_may_come_between() {
        let mut reader = Reader::new(false, 10);
        let first = frame(false, Opcode::Text, b"abcd", None);
        let ping = frame(true, Opcode::Ping, b"p", None);
        let middle = frame(false, Opcode::Continuation, b"efgh", None);
        let last = frame(true, Opcode::Continuation, b"ij", None);
        for bytes in [&first, &ping, &middle, &last] {
            assert!(whole(&mut reader, bytes).is_ok());
        }
        assert!(
            whole(&mut reader, &frame(true, Opcode::Text, b"next", None)).is_ok(),
            "the message ended"
        );
    }

    #[test]
    fn fragments_out_of_sequence_are_refused() {
        let mut reader = Reader::new(false, LIMIT);
        assert!(matches!(
            reader.next(&frame(true, Opcode::Continuation, b"x", None)),
            Err(Violation::Protocol(_))
        ));
        assert!(whole(&mut reader, &frame(false, Opcode::Binary, b"x", None)).is_ok());
        assert!(matches!(
            reader.next(&frame(true, Opcode::Text, b"x", None)),
            Err(Violation::Protocol(_))
        ));
    }

    #[test]
    fn oversize_is_refused_from_the_header_and_across_fragments() {
        let mut reader = Reader::new(false, 10);
        let big = frame(true, Opcode::Text, &[b'a'; 11], None);
        assert_eq!(reader.next(&big[..2]), Err(Violation::TooBig));
        let mut reader = Reader::new(false, 10);
        assert!(whole(&mut reader, &frame(false, Opcode::Text, &[b'a'; 6], None)).is_ok());
        assert_eq!(
            reader.next(&frame(true, Opcode::Continuation, &[b'a'; 5], None)),
            Err(Violation::TooBig)
        );
    }

    #[test]
    fn control_frames_must_be_whole_and_short() {
        let long_ping = frame(true, Opcode::Ping, &[0; 126], None);
        assert!(matches!(
            parse_header(&long_ping, LIMIT),
            Err(Violation::Protocol(_))
        ));
        let split_close = frame(false, Opcode::Close, &[3, 232], None);
        assert!(matches!(
            parse_header(&split_close, LIMIT),
            Err(Violation::Protocol(_))
        ));
        let pong = frame(true, Opcode::Pong, b"p", None);
        assert_eq!(
            parse_header(&pong, LIMIT).map(|header| header.map(|header| header.opcode)),
            Ok(Some(Opcode::Pong))
        );
    }

    #[test]
    fn reserved_bits_and_opcodes_are_refused() {
        for first in [0xC1, 0xA1, 0x91, 0x83, 0x8B] {
            assert!(
                matches!(
                    parse_header(&[first, 0], LIMIT),
                    Err(Violation::Protocol(_))
                ),
                "{first:#x}"
            );
        }
    }

    #[test]
    fn close_payloads_round_trip_and_bad_ones_are_refused() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(
            parse_close(&close_payload(4002, "forced")),
            Ok(Some((4002, "forced".to_owned())))
        );
        assert!(parse_close(&[3]).is_err());
        assert!(parse_close(&[3, 232, 0xFF]).is_err());
    }

    /// Frames as either peer may send them: data frames of any length
    /// around the 7-, 16- and 64-bit length boundaries, whole and short
    /// control frames.
    fn any_frame() -> impl Strategy<Value = (bool, Opcode, Vec<u8>)> {
        let payload = prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..200),
            1 => prop::collection::vec(any::<u8>(), 65_530..65_540),
        ];
        let data = (
            any::<bool>(),
            prop_oneof![Just(Opcode::Text), Just(Opcode::Binary)],
            payload,
        );
        let control = (
            Just(true),
            prop_oneof![Just(Opcode::Close), Just(Opcode::Ping), Just(Opcode::Pong)],
            prop::collection::vec(any::<u8>(), 0..=MAX_CONTROL_PAYLOAD),
        );
        prop_oneof![data, control]
    }

    proptest! {
        #[test]
        fn a_written_frame_reads_back_the_same(
            (fin, opcode, payload) in any_frame(),
            mask in any::<Option<[u8; 4]>>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = frame(fin, opcode, &payload, mask);
            let mut reader = Reader::new(mask.is_some(), LIMIT);
            let cut = cut.index(bytes.len());
            prop_assert!(
                matches!(reader.next(&bytes[..cut]), Ok(Next::NeedMore(need)) if need > cut),
                "a frame cut at {} of {} bytes is awaited", cut, bytes.len()
            );
            let header = whole(&mut reader, &bytes).map_err(TestCaseError::fail)?;
            prop_assert_eq!((header.fin, header.opcode, header.mask), (fin, opcode, mask));
            prop_assert_eq!(header.frame_len(), bytes.len());
            let mut read = bytes[header.payload()].to_vec();
            if let Some(key) = header.mask {
                apply_mask(&mut read, key);
            }
            prop_assert_eq!(read, payload);
        }
    }
}
