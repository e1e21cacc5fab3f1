//! Address management decided by pure functions: LoadBalancer IPs from the configured pools
//! (`lb`). The controller applies the result through the Kubernetes API.

pub mod lb;
