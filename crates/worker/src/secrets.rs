//! What `--secret` and `--ssh` give a build: secret values by id and SSH agent
//! sockets by id, as BuildKit's session secret store and SSH agent provider hold them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// BuildSecrets holds the secrets and SSH agent sockets a build was given.
#[derive(Default, Clone)]
pub struct BuildSecrets {
    secrets: BTreeMap<String, Vec<u8>>,
    ssh: BTreeMap<String, PathBuf>,
}

impl std::fmt::Debug for BuildSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: never the values.
        f.debug_struct("BuildSecrets")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("ssh", &self.ssh)
            .finish()
    }
}

impl BuildSecrets {
    /// Gives the build secret `id` with this value (a later one of the same id wins).
    pub fn add_secret(&mut self, id: &str, value: Vec<u8>) {
        self.secrets.insert(id.to_string(), value);
    }

    /// Gives the build SSH agent `id` at this socket.
    pub fn add_ssh(&mut self, id: &str, socket: PathBuf) {
        self.ssh.insert(id.to_string(), socket);
    }

    /// Whether SSH agent `id` was given.
    /// The ids of the secrets (never their values), sorted.
    pub fn ids(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    pub fn has_ssh(&self, id: &str) -> bool {
        self.ssh.contains_key(id)
    }

    pub(crate) fn secret(&self, id: &str) -> Option<&[u8]> {
        self.secrets.get(id).map(Vec::as_slice)
    }

    pub(crate) fn ssh_socket(&self, id: &str) -> Option<&Path> {
        self.ssh.get(id).map(PathBuf::as_path)
    }
}
