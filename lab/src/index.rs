//! The directory's lookups by key, kept beside `LabState::accounts`: an account by
//! sAMAccountName or objectGUID, and the accounts holding an address. Without them every
//! Exchange call and LDAP search scanned the whole directory (and parsed each account's
//! identity), so a lab of 100,000 accounts spent its time finding accounts, not emulating
//! Exchange: `mailboxd bench load` could not measure the daemon at all.
//!
//! The index is kept by the code that changes an account (`LabState::reindex`), and checked
//! against a full scan whenever the directory is small (every test's), so a change that
//! forgot to keep it fails the tests instead of giving a wrong answer quietly.

use std::collections::HashMap;

use uuid::Uuid;

use crate::directory::LabAccount;

/// Directories up to this size check every indexed answer against a full scan.
const CHECKED_UP_TO: usize = 5_000;

#[derive(Debug, Default, Clone)]
pub struct AccountIndex {
    by_sam: HashMap<String, usize>,
    by_guid: HashMap<Uuid, usize>,
    /// Lower-cased address (the part after the scheme) → the accounts holding it.
    by_address: HashMap<String, Vec<usize>>,
    /// Per account, the keys it is indexed under, to unindex it when it changes.
    keys: Vec<Keys>,
}

#[derive(Debug, Default, Clone)]
struct Keys {
    sam: String,
    guid: Uuid,
    addresses: Vec<String>,
}

/// An address's key: what follows the scheme (`SMTP:`, `smtp:`, `X500:`), lower-cased.
pub fn address_key(proxy: &str) -> String {
    proxy
        .split_once(':')
        .map_or(proxy, |(_, a)| a)
        .to_lowercase()
}

impl AccountIndex {
    pub fn build(accounts: &[LabAccount]) -> AccountIndex {
        let mut index = AccountIndex::default();
        for i in 0..accounts.len() {
            index.refresh(accounts, i);
        }
        index
    }

    /// Indexes account `i` as it is now, dropping what it was indexed under before.
    pub fn refresh(&mut self, accounts: &[LabAccount], i: usize) {
        if self.keys.len() <= i {
            self.keys.resize_with(i + 1, Keys::default);
        }
        let old = std::mem::take(&mut self.keys[i]);
        if self.by_sam.get(&old.sam) == Some(&i) {
            self.by_sam.remove(&old.sam);
        }
        if self.by_guid.get(&old.guid) == Some(&i) {
            self.by_guid.remove(&old.guid);
        }
        for a in &old.addresses {
            if let Some(holders) = self.by_address.get_mut(a) {
                holders.retain(|h| *h != i);
            }
        }
        let Some(a) = accounts.get(i) else { return };
        let keys = Keys {
            sam: a.sam_account_name.to_lowercase(),
            guid: a.object_guid,
            addresses: a.proxy_addresses.iter().map(|p| address_key(p)).collect(),
        };
        // The first account of a name wins, as a scan in order finds it.
        self.by_sam.entry(keys.sam.clone()).or_insert(i);
        self.by_guid.entry(keys.guid).or_insert(i);
        for k in &keys.addresses {
            let holders = self.by_address.entry(k.clone()).or_default();
            if !holders.contains(&i) {
                holders.push(i);
            }
        }
        self.keys[i] = keys;
    }

    /// The account with this sAMAccountName (any case).
    pub fn sam(&self, accounts: &[LabAccount], sam: &str) -> Option<usize> {
        let hit = self.by_sam.get(&sam.to_lowercase()).copied();
        checked(accounts, hit, |a| {
            a.sam_account_name.to_lowercase() == sam.to_lowercase()
        })
    }

    /// The account with this objectGUID.
    pub fn guid(&self, accounts: &[LabAccount], guid: Uuid) -> Option<usize> {
        let hit = self.by_guid.get(&guid).copied();
        checked(accounts, hit, |a| a.object_guid == guid)
    }

    /// The accounts holding `address` (any scheme, any case), in directory order.
    pub fn holders(&self, accounts: &[LabAccount], address: &str) -> Vec<usize> {
        let key = address_key(address);
        let mut hits = self.by_address.get(&key).cloned().unwrap_or_default();
        hits.sort_unstable();
        if accounts.len() <= CHECKED_UP_TO {
            let scanned: Vec<usize> = (0..accounts.len())
                .filter(|i| {
                    accounts[*i]
                        .proxy_addresses
                        .iter()
                        .any(|p| address_key(p) == key)
                })
                .collect();
            assert_eq!(hits, scanned, "the lab's address index is stale for {key}");
        }
        hits
    }
}

/// `hit`, checked against the first account a scan finds when the directory is small.
fn checked(
    accounts: &[LabAccount],
    hit: Option<usize>,
    is: impl Fn(&LabAccount) -> bool,
) -> Option<usize> {
    if accounts.len() <= CHECKED_UP_TO {
        let scanned = accounts.iter().position(is);
        assert_eq!(hit, scanned, "the lab's account index is stale");
    }
    hit
}
