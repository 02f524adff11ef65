//! A table's two coalescing change feeds: one for the peer driver, one for the state file.
//!
//! The peer feed holds only local changes (the peer already has what it sent us, and an echo
//! would bounce forever); the file feed holds local changes AND merges, because on a backup
//! almost everything arrives by merge and the file must hold it all to make a restart warm.
//! The file feed stays off (empty) unless a state file is configured, and each feed holds a
//! key at most once and only while the table does, so neither outgrows the table.

use std::collections::HashSet;

#[derive(Default)]
pub(crate) struct ChangeSets {
    peer: HashSet<Box<[u8]>>,
    file: HashSet<Box<[u8]>>,
    file_on: bool,
}

impl ChangeSets {
    /// A local write: the peer and the file both need it.
    pub(crate) fn local(&mut self, key: &[u8]) {
        insert(&mut self.peer, key);
        self.merged(key);
    }

    /// A merge that changed the table: only the file needs it.
    pub(crate) fn merged(&mut self, key: &[u8]) {
        if self.file_on {
            insert(&mut self.file, key);
        }
    }

    /// The key left the table (evicted, expired): nothing to send for it.
    pub(crate) fn gone(&mut self, key: &[u8]) {
        self.peer.remove(key);
        self.file.remove(key);
    }

    /// Whether merges are wanted at all: lets a table skip its membership check per merge
    /// when no state file is configured.
    pub(crate) fn feeds_file(&self) -> bool {
        self.file_on
    }

    pub(crate) fn take_peer(&mut self) -> Vec<Vec<u8>> {
        self.peer.drain().map(|k| k.into_vec()).collect()
    }

    pub(crate) fn take_file(&mut self) -> Vec<Vec<u8>> {
        self.file.drain().map(|k| k.into_vec()).collect()
    }

    pub(crate) fn set_file_feed(&mut self, on: bool) {
        self.file_on = on;
        if !on {
            self.file.clear();
        }
    }
}

fn insert(set: &mut HashSet<Box<[u8]>>, key: &[u8]) {
    if !set.contains(key) {
        set.insert(key.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_reach_only_the_file_feed_and_only_when_on() {
        let mut c = ChangeSets::default();
        c.local(b"a");
        c.merged(b"b");
        assert_eq!(c.take_peer(), vec![b"a".to_vec()]);
        assert!(c.take_file().is_empty(), "file feed off by default");
        c.set_file_feed(true);
        c.local(b"a");
        c.local(b"a");
        c.merged(b"b");
        c.merged(b"c");
        c.gone(b"c");
        let mut f = c.take_file();
        f.sort();
        assert_eq!(f, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(c.take_peer(), vec![b"a".to_vec()]);
    }
}
