//! Fleet mode's cluster side: the inventory shards (`codec`), leader election on a Lease
//! (`lease`), and the indexer that publishes the shards while it leads (`publish`).

pub mod codec;
pub mod lease;
pub mod publish;
