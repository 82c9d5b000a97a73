//! Inventory shards to and from their published form: the facts as JSON, gzip, base64, with the
//! digest of the JSON; reading streams (inflate, hash, parse) and is bounded in text, inflated
//! bytes and facts. Also the one reader of the objects that are not shards (catalog, heartbeat).

use std::fmt;
use std::io::{BufReader, Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Deserializer as _;
use serde::de::{self, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::model::RevisionFact;
use rollcache_core::shard::{
    self, ENCODING, InventorySpec, MAX_FACTS, NamespaceFacts, SHARD_BUDGET_BYTES, ShardError,
};

/// The content of a `RollcacheInventory` that is not a shard (the catalog, the heartbeat): its
/// top-level `field` read as `T`, or why not, naming the object as `what`.
pub fn read_unsharded<T: de::DeserializeOwned>(
    obj: &serde_json::Value,
    field: &str,
    what: &str,
) -> Result<T, String> {
    let content = obj
        .get(field)
        .ok_or_else(|| format!("{what} has no `{field}` field"))?;
    T::deserialize(content).map_err(|e| format!("{what} is not readable: {e}"))
}

/// Base64 text a read shard may hold: what the API server accepts in one object at most.
pub const MAX_DATA_TEXT: usize = 3 * 1024 * 1024 / 2;

/// JSON one shard may inflate to. Facts compress about tenfold; a shard within the budget stays
/// far below, and a hostile one stops here, before any fact is built.
pub const MAX_INFLATED: usize = 16 * 1024 * 1024;

/// Every shard of one source namespace: the fewest shards (a power of two) whose compressed data
/// each fits `budget`, so that the same facts always give the same shards. A shard over the
/// budget with one object cannot be split: such a shard alone stops the doubling.
pub fn encode_namespace(
    namespace: &str,
    facts: &NamespaceFacts<'_>,
    budget: usize,
) -> Vec<InventorySpec> {
    let mut shards = 1;
    loop {
        let specs = encode_shards(namespace, facts, shards);
        let over: Vec<&InventorySpec> = specs
            .iter()
            .filter(|s| s.data.len() * 3 / 4 > budget || s.revisions > MAX_FACTS)
            .collect();
        let splittable = !over.is_empty() && over.iter().all(|s| s.objects > 1);
        match shard::grow(shards) {
            Some(next) if splittable => shards = next,
            _ => return specs,
        }
    }
}

/// Every shard of one source namespace split into exactly `shards` (a power of two).
pub fn encode_shards(
    namespace: &str,
    facts: &NamespaceFacts<'_>,
    shards: u32,
) -> Vec<InventorySpec> {
    (0..shards)
        .map(|s| encode_shard(namespace, &shard::shard_facts(facts, s, shards), s, shards))
        .collect()
}

/// `encode_namespace` with the default budget.
pub fn encode(namespace: &str, facts: &NamespaceFacts<'_>) -> Vec<InventorySpec> {
    encode_namespace(namespace, facts, SHARD_BUDGET_BYTES)
}

fn encode_shard(
    namespace: &str,
    facts: &[&RevisionFact],
    shard: u32,
    shards: u32,
) -> InventorySpec {
    let json = serde_json::to_vec(facts).expect("facts serialize: plain data, string keys");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&json).expect("gzip into memory");
    let compressed = gz.finish().expect("gzip into memory");
    InventorySpec {
        source_namespace: namespace.to_owned(),
        shard,
        shards,
        objects: shard::count_objects(facts.iter().copied()),
        revisions: facts.len() as u64,
        encoding: ENCODING.to_owned(),
        data: STANDARD.encode(compressed),
        digest: shard::digest(&json),
        unresolved: Vec::new(),
    }
}

/// The facts of the shard named `name`, refused whole (with an error naming it) when its
/// encoding is unknown, its text or inflated data is over the caps, its digest does not match,
/// or its facts leave its namespace or miscount.
pub fn decode(name: &str, spec: &InventorySpec) -> Result<Vec<RevisionFact>, ShardError> {
    decode_with(name, spec, MAX_INFLATED)
}

/// `decode` with an inflation cap of `cap` bytes.
pub fn decode_with(
    name: &str,
    spec: &InventorySpec,
    cap: usize,
) -> Result<Vec<RevisionFact>, ShardError> {
    let shard = || name.to_owned();
    if spec.encoding != ENCODING {
        return Err(ShardError::Encoding {
            shard: shard(),
            encoding: spec.encoding.clone(),
        });
    }
    if spec.revisions > MAX_FACTS {
        return Err(ShardError::TooManyFacts {
            shard: shard(),
            revisions: spec.revisions,
        });
    }
    if spec.data.len() > MAX_DATA_TEXT {
        return Err(ShardError::DataTooLarge {
            shard: shard(),
            bytes: spec.data.len(),
            cap: MAX_DATA_TEXT,
        });
    }
    let compressed = STANDARD
        .decode(spec.data.as_bytes())
        .map_err(|e| ShardError::Base64 {
            shard: shard(),
            cause: e.to_string(),
        })?;
    // Inflated while it is parsed, hashed and counted on the way: no copy of the JSON is held,
    // and the facts built stop at the count the spec claims. One byte more than the cap tells
    // "exactly the cap" from "beyond it".
    let mut inflated = Hashing {
        inner: GzDecoder::new(compressed.as_slice()).take(cap as u64 + 1),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut buffered = BufReader::new(&mut inflated);
    let parsed = {
        let mut de = serde_json::Deserializer::from_reader(&mut buffered);
        de.deserialize_seq(Counted(spec.revisions as usize))
            .and_then(|f| de.end().map(|()| f))
    };
    // Whatever the parser made of it, the size and digest checks see all of it.
    let drained = std::io::copy(&mut buffered, &mut std::io::sink());
    drop(buffered);
    if inflated.bytes > cap {
        return Err(ShardError::Inflated {
            shard: shard(),
            cap,
        });
    }
    let gzip = |cause: String| ShardError::Gzip {
        shard: shard(),
        cause,
    };
    drained.map_err(|e| gzip(e.to_string()))?;
    if let Err(e) = &parsed
        && e.is_io()
    {
        return Err(gzip(e.to_string()));
    }
    let found = format!("sha256:{}", hex::encode(inflated.hash.finalize()));
    if found != spec.digest {
        return Err(ShardError::Digest {
            shard: shard(),
            expected: spec.digest.clone(),
            found,
        });
    }
    let facts = parsed.map_err(|e| ShardError::Json {
        shard: shard(),
        cause: e.to_string(),
    })?;
    shard::check_facts(name, spec, &facts)?;
    Ok(facts)
}

/// A JSON array of at most `.0` facts.
struct Counted(usize);

impl<'de> Visitor<'de> for Counted {
    type Value = Vec<RevisionFact>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {} revision facts", self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.0.min(1024));
        while let Some(fact) = seq.next_element::<RevisionFact>()? {
            if out.len() == self.0 {
                return Err(de::Error::custom(format!(
                    "more facts than the {} the spec counts",
                    self.0
                )));
            }
            out.push(fact);
        }
        Ok(out)
    }
}

/// Hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: usize,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n;
        Ok(n)
    }
}
