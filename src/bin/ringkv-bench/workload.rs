//! What the load asks for: the operation mix, the key distribution, and the request bytes.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use ringkv::config::Durability;

/// One of the three API operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Set,
    Get,
    Del,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Set, Op::Get, Op::Del];

    pub fn name(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Get => "get",
            Op::Del => "del",
        }
    }
}

/// The operation and, for writes under a durability mix, the class asked for: what latency is
/// reported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    pub op: Op,
    pub durability: Option<Durability>,
}

impl Kind {
    /// `set`, or `set/always` when the class was asked for.
    pub fn name(self) -> String {
        match self.durability {
            Some(class) => format!("{}/{}", self.op.name(), class.name()),
            None => self.op.name().to_string(),
        }
    }
}

impl From<Op> for Kind {
    fn from(op: Op) -> Kind {
        Kind { op, durability: None }
    }
}

/// Relative weights of the durability classes writes ask for, written `always:10,never:90`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurabilityMix {
    /// Indexed as `Durability::ALL`.
    weights: [u32; 4],
}

impl DurabilityMix {
    pub fn pick(&self, rng: &mut SmallRng) -> Durability {
        let total: u32 = self.weights.iter().sum();
        let mut roll = rng.gen_range(0..total);
        for (class, &weight) in Durability::ALL.iter().zip(&self.weights) {
            if roll < weight {
                return *class;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }
}

impl FromStr for DurabilityMix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights = [0u32; 4];
        for part in text.split(',') {
            let (name, weight) = part.split_once(':').ok_or_else(|| {
                format!("durability part {part:?} is not CLASS:WEIGHT (e.g. always:10,never:90)")
            })?;
            let class: Durability = name.trim().parse()?;
            let index = Durability::ALL
                .iter()
                .position(|&c| c == class)
                .expect("every class is in ALL");
            weights[index] = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {name} is not a whole number"))?;
        }
        if weights.iter().sum::<u32>() == 0 {
            return Err("the durability mix has no class with a weight above 0".to_string());
        }
        Ok(DurabilityMix { weights })
    }
}

impl fmt::Display for DurabilityMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Durability::ALL
            .iter()
            .rev()
            .zip(self.weights.iter().rev())
            .filter(|(_, &weight)| weight > 0)
            .map(|(class, weight)| format!("{}:{weight}", class.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Relative weights of set, get and del, written `set:50,get:50` (missing operations weigh 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
}

impl Mix {
    /// Draws an operation with probability proportional to its weight.
    pub fn pick(&self, rng: &mut SmallRng) -> Op {
        let total: u32 = self.weights.iter().sum();
        let mut roll = rng.gen_range(0..total);
        for (op, &weight) in Op::ALL.iter().zip(&self.weights) {
            if roll < weight {
                return *op;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }

    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op as usize]
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights = [0u32; 3];
        for part in text.split(',') {
            let (name, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("mix part {part:?} is not OP:WEIGHT (e.g. set:50,get:50)"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| format!("unknown operation {name:?} in the mix: expected set, get or del"))?;
            weights[op as usize] = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {name} is not a whole number"))?;
        }
        if weights.iter().sum::<u32>() == 0 {
            return Err("the mix has no operation with a weight above 0".to_string());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Op::ALL
            .iter()
            .filter(|op| self.weight(**op) > 0)
            .map(|op| format!("{}:{}", op.name(), self.weight(*op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// How keys are drawn from `0..keys`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Zipfian with exponent `theta`: key rank r is drawn with probability ∝ 1/r^theta.
    Zipfian {
        theta: f64,
    },
}

impl FromStr for KeyDist {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "uniform" {
            return Ok(KeyDist::Uniform);
        }
        if text == "zipfian" {
            return Ok(KeyDist::Zipfian { theta: 0.99 });
        }
        let theta = text.strip_prefix("zipfian:").ok_or_else(|| {
            format!("unknown key distribution {text:?}: expected uniform, zipfian or zipfian:THETA")
        })?;
        let theta: f64 = theta
            .parse()
            .map_err(|_| format!("zipfian:THETA needs a number, got {theta:?}"))?;
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(format!("zipfian:THETA needs THETA > 0, got {theta}"));
        }
        Ok(KeyDist::Zipfian { theta })
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => write!(f, "uniform"),
            KeyDist::Zipfian { theta } => write!(f, "zipfian:{theta}"),
        }
    }
}

/// Draws key numbers.
pub enum KeyPicker {
    Uniform { keys: u64 },
    Zipfian { keys: u64, zipf: Zipf<f64> },
}

impl KeyPicker {
    pub fn new(dist: KeyDist, keys: u64) -> Result<Self, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".to_string());
        }
        Ok(match dist {
            KeyDist::Uniform => KeyPicker::Uniform { keys },
            KeyDist::Zipfian { theta } => KeyPicker::Zipfian {
                keys,
                zipf: Zipf::new(keys, theta).map_err(|error| format!("zipfian: {error}"))?,
            },
        })
    }

    pub fn pick(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyPicker::Uniform { keys } => rng.gen_range(0..*keys),
            KeyPicker::Zipfian { keys, zipf } => {
                let rank = crate::recorder::whole(zipf.sample(rng)); // 1..=keys
                                                                     // Spread the hot ranks over the key space, so that popularity is not key order.
                scatter(rank - 1) % keys
            }
        }
    }
}

/// A bijective mix of 64-bit numbers (splitmix64's finaliser).
fn scatter(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Builds request bytes for one operation on key number `key`.
pub struct RequestWriter {
    host: String,
    /// The JSON string of every value: a quote, `value_bytes` letters, a quote.
    value_json: String,
}

impl RequestWriter {
    pub fn new(host: String, value_bytes: usize) -> Self {
        let letters: String = (0..value_bytes)
            .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("below 26")))
            .collect();
        RequestWriter {
            host,
            value_json: format!("\"{letters}\""),
        }
    }

    pub fn key(key: u64) -> String {
        format!("k{key:010}")
    }

    /// Appends the request for `kind` on `key` to `out`.
    pub fn write(&self, out: &mut Vec<u8>, kind: Kind, key: u64) {
        use std::io::Write;
        let key = Self::key(key);
        let host = &self.host;
        let class = kind
            .durability
            .map(|class| format!("durability={}", class.name()))
            .unwrap_or_default();
        let result = match kind.op {
            Op::Get => write!(out, "GET /get?key={key} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Op::Del => write!(
                out,
                "DELETE /del?key={key}&{class} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ),
            Op::Set => {
                let body_len = r#"{"key":"","value":}"#.len() + key.len() + self.value_json.len();
                write!(
                    out,
                    "POST /set?{class} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n{{\"key\":\"{key}\",\"value\":{}}}",
                    self.value_json
                )
            }
        };
        result.expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mixes_parse_and_draw_in_proportion() {
        let mix: Mix = "set:1,get:3".parse().unwrap();
        assert_eq!(mix.to_string(), "set:1,get:3");
        let mut rng = SmallRng::seed_from_u64(1);
        let gets = (0..40_000).filter(|_| mix.pick(&mut rng) == Op::Get).count();
        assert!((29_000..31_000).contains(&gets), "{gets} gets of 40000");
        for bad in ["set", "put:1", "set:x", "set:0,get:0", ""] {
            assert!(bad.parse::<Mix>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn zipfian_keys_are_skewed_and_in_range() {
        let picker = KeyPicker::new("zipfian".parse().unwrap(), 1000).unwrap();
        let mut rng = SmallRng::seed_from_u64(2);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[ringkv::coding::to_usize(picker.pick(&mut rng))] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // With theta 0.99 over 1000 keys the top 10 keys take about 39% of draws; uniform: 1%.
        let top10: u32 = counts[..10].iter().sum();
        assert!((30_000..48_000).contains(&top10), "top 10 keys drew {top10}");
        assert!("zipfian:0".parse::<KeyDist>().is_err());
        assert!("normal".parse::<KeyDist>().is_err());
    }

    #[test]
    fn a_set_request_is_valid_http_with_an_exact_content_length() {
        let writer = RequestWriter::new("h".into(), 5);
        let mut out = Vec::new();
        writer.write(&mut out, Op::Set.into(), 7);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut headers);
        let head = request.parse(&out).unwrap().unwrap();
        let body = &out[head..];
        assert_eq!(body, br#"{"key":"k0000000007","value":"abcde"}"#);
        let length = request
            .headers
            .iter()
            .find(|h| h.name == "Content-Length")
            .unwrap();
        assert_eq!(std::str::from_utf8(length.value).unwrap(), body.len().to_string());
    }
}
