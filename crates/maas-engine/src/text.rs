//! Turning a stream of token bytes into text pieces that are whole UTF-8 and never show any
//! part of a stop string.

/// What pushing token bytes produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text safe to show now (may be empty when it is held back).
    Text(String),
    /// A stop string appeared: this is the text before it, and generation ends.
    Stopped(String),
}

/// Assembles token bytes into text, holding back bytes of an unfinished UTF-8 character and
/// text that might be the start of a stop string.
#[derive(Debug, Default)]
pub struct TextAssembler {
    stops: Vec<String>,
    pending_bytes: Vec<u8>,
    held: String,
}

impl TextAssembler {
    /// An assembler that ends at any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Adds one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Piece {
        self.pending_bytes.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending_bytes) {
            Ok(_) => self.pending_bytes.len(),
            // An incomplete character at the end waits for the next token; a broken one in
            // the middle is replaced, as a lossy decoder would.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending_bytes.len(),
        };
        let decoded: Vec<u8> = self.pending_bytes.drain(..valid).collect();
        self.held.push_str(&String::from_utf8_lossy(&decoded));

        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return Piece::Stopped(before);
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        Piece::Text(out)
    }

    /// Whatever is still held back, at the end of a generation that did not stop on a string.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&String::from_utf8_lossy(&std::mem::take(
            &mut self.pending_bytes,
        )));
        out
    }

    /// Length in bytes of the longest end of `held` that begins some stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in self.held.char_indices() {
                let tail = &self.held[i..];
                if tail.len() > best && stop.starts_with(tail) {
                    best = tail.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: Piece) -> String {
        match p {
            Piece::Text(t) => t,
            Piece::Stopped(t) => panic!("stopped early with {t:?}"),
        }
    }

    #[test]
    fn split_utf8_characters_are_joined() {
        let mut a = TextAssembler::new(&[]);
        let bytes = "é🙂".as_bytes();
        assert_eq!(text(a.push(&bytes[..1])), "");
        assert_eq!(text(a.push(&bytes[1..3])), "é");
        assert_eq!(text(a.push(&bytes[3..])), "🙂");
        assert_eq!(a.finish(), "");
    }

    #[test]
    fn stop_strings_end_the_text_even_across_tokens() {
        let mut a = TextAssembler::new(&["\nUser:".to_owned()]);
        assert_eq!(text(a.push(b"Hello")), "Hello");
        assert_eq!(text(a.push(b" there\nUs")), " there");
        assert_eq!(a.push(b"er: hi"), Piece::Stopped(String::new()));
    }

    #[test]
    fn held_text_that_was_not_a_stop_is_released() {
        let mut a = TextAssembler::new(&["STOP".to_owned()]);
        assert_eq!(text(a.push(b"ST")), "");
        assert_eq!(text(a.push(b"AY")), "STAY");
        assert_eq!(text(a.push(b" ST")), " ");
        assert_eq!(a.finish(), "ST");
    }

    #[test]
    fn the_earliest_stop_wins() {
        let mut a = TextAssembler::new(&["b".to_owned(), "a".to_owned()]);
        assert_eq!(a.push(b"xxab"), Piece::Stopped("xx".to_owned()));
    }
}
