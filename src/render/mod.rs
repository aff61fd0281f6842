//! Every file each host receives, rendered from the plan with tera templates.
//!
//! (Interface stub: the implementation replaces the bodies.)

use std::collections::BTreeMap;

use crate::files::File;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error("{0}")]
    Todo(String),
}

/// Cluster secrets that configuration files embed (not certificates).
pub struct Secrets<'a> {
    pub vrrp_password: &'a str,
}

/// Static-pod manifests and component configs per host name, each list sorted by path.
pub fn host_configs(_plan: &Plan, _secrets: &Secrets) -> Result<BTreeMap<String, Vec<File>>, RenderError> {
    Err(RenderError::Todo("render::host_configs".into()))
}
