//! Address management decided by pure functions: LoadBalancer IPs from the configured pools
//! (`lb`) and pod address blocks per node (`blocks`). The controller applies the results
//! through the Kubernetes API.

pub mod blocks;
pub mod lb;
