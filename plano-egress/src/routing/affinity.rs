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

/// The header carrying [`prefix_hash`] to a `prefix_affinity` upstream (Plano's name).
pub const PREFIX_HASH_HEADER: &str = "x-plano-prefix-hash";

/// The stable prefix of a conversation: system prompts and tool names, hashed as Plano's
/// brightstaff does (same salt, chunks and value, with its tenant chunk empty), so the
/// `x-plano-prefix-hash` we send matches Plano's for the same request. As in Plano, a
/// conversation without a user message has none (nothing to anchor on), and neither has
/// a request with `x-plano-cache: off`.
pub fn prefix_hash(headers: &HeaderMap, conv: &Conversation) -> Option<u64> {
    if cache_off(headers) || !conv.turns.iter().any(|t| t.role == "user") {
        return None;
    }
    let system = system_text(conv);
    Some(fnv1a(&["", &system, &conv.tools.join(",")]))
}

fn cache_off(headers: &HeaderMap) -> bool {
    headers
        .get(CACHE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
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
    if cache_off(headers) {
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
        self.walk(key).next()
    }

    /// Every replica once, in ring order from this key's point: the one [`pick`] gives,
    /// then the one that would take its keys were it gone, and so on. A request whose
    /// replica cannot be reached goes to the next, as its keys would after a removal.
    ///
    /// [`pick`]: HashRing::pick
    pub fn walk(&self, key: u64) -> impl Iterator<Item = &str> {
        // Mix the key: prefix hashes of similar prompts should not land on neighbouring points.
        let key = mix(key);
        let start = self.points.partition_point(|(p, _)| *p < key);
        let mut seen = vec![false; self.nodes.len()];
        let mut left = self.nodes.len();
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map_while(move |(_, i)| {
                // Stop once every replica was given, not after every point.
                if left == 0 {
                    return None;
                }
                let first = seen
                    .get_mut(*i)
                    .is_some_and(|s| !std::mem::replace(s, true));
                if first {
                    left -= 1;
                }
                Some(first.then(|| self.nodes.get(*i)).flatten())
            })
            .flatten()
            .map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
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
        assert_eq!(prefix_hash(&h, &t1), prefix_hash(&h, &t3));
        assert!(prefix_hash(&h, &t1).is_some());
        assert_ne!(prefix_hash(&h, &t1), prefix_hash(&h, &other_system));
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
    fn the_prefix_hash_is_plano_s_and_needs_a_user_turn() {
        let h = HeaderMap::new();
        let mut c = conv(&[("system", "be terse"), ("user", "hi")]);
        c.tools = vec!["get_weather".into(), "search".into()];
        // The value Plano's brightstaff sends for this request (its FNV-1a over the salt,
        // an empty tenant, the system text and the tool names), computed independently.
        assert_eq!(
            prefix_hash(&h, &c).map(|v| format!("{v:016x}")).as_deref(),
            Some("dcd0f4cfd9270b3d")
        );
        assert_eq!(prefix_hash(&h, &conv(&[("system", "be terse")])), None);
        let mut off = HeaderMap::new();
        off.insert(CACHE_HEADER, "off".parse().unwrap());
        assert_eq!(prefix_hash(&off, &c), None);
    }

    #[test]
    fn walking_the_ring_visits_every_replica_once_starting_at_the_pick() {
        let nodes: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:8000")).collect();
        let ring = HashRing::new(&nodes);
        for key in 0..200u64 {
            let order: Vec<&str> = ring.walk(key).collect();
            assert_eq!(order.first().copied(), ring.pick(key));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), nodes.len(), "{order:?}");
            // The second replica is where this key goes once the first is removed.
            let without: Vec<String> = nodes
                .iter()
                .filter(|n| n.as_str() != order[0])
                .cloned()
                .collect();
            assert_eq!(HashRing::new(&without).pick(key), Some(order[1]));
        }
        assert_eq!(HashRing::new(&[]).walk(7).count(), 0);
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
