//! Where the configuration comes from: the same file, flags and environment at start-up
//! and at every reload (the reloader itself is the runtime's, [`crate::runtime`]).

use crate::config::{self, Config, ConfigError, Overrides};
use std::path::PathBuf;

/// Reads one environment variable (a parameter so that tests and the demo choose theirs).
pub type Env = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where the configuration comes from: the same file, flags and environment every time.
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    pub env: Box<Env>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        config::load(self.path.as_deref(), &self.overrides, &*self.env)
    }

    /// `admin.listen` alone, with the same precedence (for `healthcheck`).
    pub fn admin_listen(&self) -> Result<std::net::SocketAddr, ConfigError> {
        config::load_admin_listen(self.path.as_deref(), &self.overrides, &*self.env)
    }

    /// `journal.path` alone, with the same precedence and default (for `calls`, `demo`).
    pub fn journal_location(&self) -> Result<config::JournalLocation, ConfigError> {
        config::load_journal_location(self.path.as_deref(), &self.overrides, &*self.env)
    }
}
