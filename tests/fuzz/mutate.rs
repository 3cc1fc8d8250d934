//! The deterministic mutator: a seeded SplitMix64 and the edits it makes to a seed file, aimed
//! mostly at what a reader parses (a safetensors header's JSON and its length prefix, a JSON
//! file's numbers and strings) rather than at tensor data, which no reader interprets.

/// SplitMix64: small, seedable, the same sequence on every machine.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers that sit on the edges readers must check: zero, one past a length, 2^32, 2^53 + 1,
/// u64::MAX, negative and fractional values, an exponent that overflows.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "255",
    "65536",
    "2147483648",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "0.5",
    "99999999999999999999999",
];

/// Strings a safetensors header or a config holds: dtypes, and names readers look for.
const STRINGS: &[&str] = &[
    "F32",
    "F16",
    "BF16",
    "F64",
    "I64",
    "I32",
    "U8",
    "BOOL",
    "F8_E4M3",
    "",
    "x",
    "__metadata__",
];

const BYTES: &[u8] = b"\x00\xff\x7f\x80\"\\{}[],:0123456789-.eE ";

/// The length of the safetensors header (prefix included) if `bytes` starts like one, else the
/// whole length: where mutations are worth placing.
fn parsed_region(bytes: &[u8]) -> usize {
    let Some(prefix) = bytes.get(..8) else {
        return bytes.len();
    };
    let n = u64::from_le_bytes(prefix.try_into().unwrap());
    match n.checked_add(8) {
        Some(end) if end as usize <= bytes.len() => end as usize,
        _ => bytes.len(),
    }
}

/// `seed` with one to four edits, into `out`.
pub fn mutate(seed: &[u8], rng: &mut SplitMix, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(seed);
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let region = parsed_region(out).max(1);
        let before = out.len();
        // Nine times in ten inside the parsed region, else anywhere.
        let at = |rng: &mut SplitMix, len: usize| match rng.below(10) {
            0 => rng.below(len.max(1)),
            _ => rng.below(region.min(len).max(1)),
        };
        match rng.below(9) {
            0 if !out.is_empty() => {
                let i = at(rng, out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at(rng, out.len());
                out[i] = *rng.pick(BYTES);
            }
            2 => replace_token(
                out,
                rng,
                region,
                |b| b.is_ascii_digit() || b == b'-',
                NUMBERS,
            ),
            3 => replace_token(
                out,
                rng,
                region,
                |b| b.is_ascii_alphanumeric() || b == b'_',
                STRINGS,
            ),
            4 => {
                let keep = rng.below(out.len() + 1);
                out.truncate(keep);
            }
            5 if out.len() >= 8 => {
                let lengths = [
                    0,
                    1,
                    7,
                    region as u64 - 8 + 1,
                    region as u64,
                    out.len() as u64,
                    u64::MAX,
                    1 << 40,
                ];
                let n = *rng.pick(&lengths);
                out[..8].copy_from_slice(&n.to_le_bytes());
            }
            6 if !out.is_empty() => {
                let i = at(rng, out.len());
                let end = (i + 1 + rng.below(16)).min(out.len());
                out.drain(i..end);
            }
            7 if !out.is_empty() => {
                let i = at(rng, out.len());
                let end = (i + 1 + rng.below(32)).min(out.len());
                let copy = out[i..end].to_vec();
                let to = at(rng, out.len());
                out.splice(to..to, copy);
            }
            _ => {
                // A byte of the region written where another is, as JSON editing might.
                if !out.is_empty() {
                    let (i, j) = (at(rng, out.len()), at(rng, out.len()));
                    out[i] = out[j];
                }
            }
        }
        // An edit that moved the header's end: half the time the length prefix follows it, so
        // that the reader gets past the prefix to the JSON and the offsets.
        let moved = out.len() as i64 - before as i64;
        if moved != 0 && region < before && out.len() >= 8 && rng.below(2) == 0 {
            let header = (region as i64 - 8 + moved).max(0) as u64;
            out[..8].copy_from_slice(&header.to_le_bytes());
        }
    }
}

/// Replaces one run of bytes matching `class` inside `0..region` with one of `tokens`.
fn replace_token(
    out: &mut Vec<u8>,
    rng: &mut SplitMix,
    region: usize,
    class: fn(u8) -> bool,
    tokens: &[&str],
) {
    let region = region.min(out.len());
    let starts: Vec<usize> = (0..region)
        .filter(|&i| class(out[i]) && (i == 0 || !class(out[i - 1])))
        .collect();
    if starts.is_empty() {
        return;
    }
    let start = *rng.pick(&starts);
    let mut end = start;
    while end < region && class(out[end]) {
        end += 1;
    }
    let mut token = rng.pick(tokens).as_bytes().to_vec();
    // Half the time a shorter token is padded with spaces (JSON whitespace) to the old length,
    // so that the header keeps its length and the data offsets stay where they were: the
    // reader then gets to the checks of shapes, types and offsets against each other.
    if token.len() < end - start && rng.below(2) == 0 {
        token.resize(end - start, b' ');
    }
    out.splice(start..end, token);
}
