//! Keeping a conversation on one provider (`prompt_caching.session_affinity`) and one
//! replica (`endpoints.<name>.prefix_affinity`), so provider-side prompt caches and a
//! self-hosted server's KV cache keep hitting.
//!
//! A conversation is named by the client (`x-model-affinity: <id>`) or, without that
//! header, by a hash of what every turn of it repeats verbatim at its head: the system
//! prompt, the tool names and the first user message (history grows at the tail). Only
//! salted hashes are kept, never prompt text.

use http::HeaderMap;

use super::prompt::Conversation;

/// The header a client names its conversation with (Plano's).
pub const AFFINITY_HEADER: &str = "x-model-affinity";
/// A request with `x-plano-cache: off` is neither pinned nor routed from a pin.
pub const CACHE_HEADER: &str = "x-plano-cache";
const SALT: &str = "plano-affinity-v1";

/// FNV-1a, 64 bit: stable across processes and versions (unlike `DefaultHasher`), so
/// replicas agree on keys. A separator byte between chunks keeps ("ab","c") ≠ ("a","bc").
pub fn fnv1a(chunks: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for chunk in std::iter::once(&SALT).chain(chunks) {
        for b in chunk.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        h ^= 0x1f;
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The stable prefix of a conversation: system prompts and tool names.
pub fn prefix_hash(conv: &Conversation) -> u64 {
    let system = system_text(conv);
    fnv1a(&[&system, &conv.tools.join(",")])
}

fn system_text(conv: &Conversation) -> String {
    conv.turns
        .iter()
        .filter(|t| matches!(t.role.as_str(), "system" | "developer"))
        .map(|t| t.content.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The session a request belongs to, or `None` (opted out, or nothing to anchor on).
pub fn session_key(headers: &HeaderMap, conv: &Conversation) -> Option<String> {
    if headers
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
    {
        return None;
    }
    if let Some(id) = headers
        .get(AFFINITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        return Some(format!("explicit:{id}"));
    }
    let first_user = conv.turns.iter().find(|t| t.role == "user")?;
    let system = system_text(conv);
    let h = fnv1a(&[&system, &conv.tools.join(","), &first_user.content]);
    Some(format!("implicit:{h:016x}"))
}

/// Consistent hashing over a set of replicas: each gets `VNODES` points on a ring, a key
/// goes to the first point at or after its hash. Adding or removing one replica moves
/// only the keys that land on its points (about 1/n of them).
#[derive(Debug, Clone)]
pub struct HashRing {
    points: Vec<(u64, usize)>,
    nodes: Vec<String>,
}

const VNODES: usize = 160;

/// A 64-bit finaliser (MurmurHash3's fmix64): FNV of short, similar strings clusters,
/// which would give some replicas far more of the ring than others.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl HashRing {
    pub fn new(nodes: &[String]) -> Self {
        let mut points = Vec::with_capacity(nodes.len() * VNODES);
        for (i, n) in nodes.iter().enumerate() {
            for v in 0..VNODES {
                points.push((mix(fnv1a(&[n, &v.to_string()])), i));
            }
        }
        points.sort_unstable();
        Self {
            points,
            nodes: nodes.to_vec(),
        }
    }

    /// The replica for this key hash; `None` for an empty ring.
    pub fn pick(&self, key: u64) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        // Mix the key: prefix hashes of similar prompts should not land on neighbouring points.
        let key = mix(key);
        let i = self.points.partition_point(|(p, _)| *p < key) % self.points.len();
        self.nodes.get(self.points[i].1).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::prompt::Turn;

    fn conv(turns: &[(&str, &str)]) -> Conversation {
        Conversation {
            turns: turns.iter().map(|(r, c)| Turn::new(r, c)).collect(),
            tools: vec![],
        }
    }

    #[test]
    fn the_implicit_key_is_stable_as_a_conversation_grows() {
        let h = HeaderMap::new();
        let t1 = conv(&[("system", "be terse"), ("user", "fix main.rs")]);
        let t3 = conv(&[
            ("system", "be terse"),
            ("user", "fix main.rs"),
            ("assistant", "done"),
            ("user", "now add tests"),
        ]);
        let k = session_key(&h, &t1).unwrap();
        assert!(k.starts_with("implicit:"));
        assert_eq!(Some(k.clone()), session_key(&h, &t3));
        let other = conv(&[("system", "be terse"), ("user", "write a poem")]);
        assert_ne!(Some(k.clone()), session_key(&h, &other));
        let other_system = conv(&[("system", "be verbose"), ("user", "fix main.rs")]);
        assert_ne!(Some(k), session_key(&h, &other_system));
        assert_eq!(prefix_hash(&t1), prefix_hash(&t3));
    }

    #[test]
    fn the_header_names_a_session_and_cache_off_opts_out() {
        let c = conv(&[("user", "hi")]);
        let mut h = HeaderMap::new();
        h.insert(AFFINITY_HEADER, "abc".parse().unwrap());
        assert_eq!(session_key(&h, &c).as_deref(), Some("explicit:abc"));
        h.insert(CACHE_HEADER, "OFF".parse().unwrap());
        assert_eq!(session_key(&h, &c), None);
        assert_eq!(
            session_key(&HeaderMap::new(), &conv(&[("system", "x")])),
            None
        );
    }

    #[test]
    fn hashing_is_stable_and_separates_chunks() {
        assert_eq!(fnv1a(&["a", "b"]), fnv1a(&["a", "b"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
        // Pinned: replicas and restarts must agree on keys.
        assert_eq!(fnv1a(&[]), fnv1a(&[]));
        assert_eq!(format!("{:016x}", fnv1a(&["x"])).len(), 16);
    }

    #[test]
    fn the_ring_is_consistent() {
        let nodes: Vec<String> = (0..4).map(|i| format!("10.0.0.{i}:8000")).collect();
        let ring = HashRing::new(&nodes);
        let keys: Vec<u64> = (0..2000u64).collect();
        let before: Vec<String> = keys
            .iter()
            .map(|k| ring.pick(*k).unwrap().to_string())
            .collect();
        // Every replica gets a fair share.
        for n in &nodes {
            let share = before.iter().filter(|b| *b == n).count();
            assert!((300..=700).contains(&share), "{n}: {share}");
        }
        // Same key, same replica.
        assert_eq!(ring.pick(42), ring.pick(42));
        // Adding a fifth replica moves only about a fifth of the keys, all to it.
        let mut more = nodes.clone();
        more.push("10.0.0.9:8000".into());
        let ring5 = HashRing::new(&more);
        let mut moved = 0;
        for (k, b) in keys.iter().zip(&before) {
            let now = ring5.pick(*k).unwrap();
            if now != b {
                moved += 1;
                assert_eq!(now, "10.0.0.9:8000");
            }
        }
        assert!((200..=650).contains(&moved), "moved {moved}");
        assert_eq!(HashRing::new(&[]).pick(1), None);
    }
}
