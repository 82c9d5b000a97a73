//! Fleet mode's cluster side: the inventory shards (`codec`), leader election on a Lease
//! (`lease`), and the indexer that publishes the shards while it leads (`publish`).

pub mod codec;
pub mod lease;
pub mod publish;

use kube::api::{ApiResource, GroupVersionKind};
use rollcache_core::shard;

/// The `RollcacheInventory` resource for a dynamic API.
pub fn inventory_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk(shard::GROUP, shard::VERSION, shard::KIND);
    ApiResource::from_gvk_with_plural(&gvk, shard::PLURAL)
}
