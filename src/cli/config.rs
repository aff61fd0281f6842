//! `kubeha config`: help with writing an inventory.

/// The sample `kubeha config example` prints; a unit test keeps it valid.
const SAMPLE: &str = include_str!("../../inventories/sample.yaml");

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a commented sample inventory with every field.
    #[command(after_help = "Examples:\n  \
        kubeha config example > cluster.yaml\n  \
        kubeha config example | kubeha validate -i -")]
    Example,
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Example => super::output::print(SAMPLE)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_is_a_valid_inventory() {
        let plan = crate::inventory::parse(super::SAMPLE, std::path::Path::new(".")).unwrap();
        assert_eq!(plan.control_planes().count(), 3);
    }
}
