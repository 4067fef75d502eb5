//! [`StateCatalog`]: the states a backend has registered, by id and by name.
//!
//! Every backend implements [`KeyedStateBackend::register_state`] the same
//! way: look the name up; if it is there, check the kind and take the new
//! TTL; if not, hand out the next id. This module is that logic, once; the
//! backend keeps beside each descriptor whatever it needs (a table, a column
//! family name).
//!
//! [`KeyedStateBackend::register_state`]: crate::KeyedStateBackend::register_state

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use crate::backend::StateDescriptor;
use crate::ids::StateId;
use crate::ttl::TtlConfig;
use crate::{Result, StateError};

/// What a [`StateCatalog`] holds per state: a descriptor, and whatever the
/// backend keeps beside it.
pub trait CatalogEntry {
    /// The state's descriptor.
    fn descriptor(&self) -> &StateDescriptor;
    /// Takes `ttl` as the state's TTL (registering a state again replaces it).
    fn set_ttl(&mut self, ttl: Option<TtlConfig>);
    /// Takes `type_name` as the state's recorded type (a registration that
    /// records a type over a snapshot that had none, or a migration).
    fn set_type_name(&mut self, type_name: Option<String>);
}

impl CatalogEntry for StateDescriptor {
    fn descriptor(&self) -> &StateDescriptor {
        self
    }

    fn set_ttl(&mut self, ttl: Option<TtlConfig>) {
        self.ttl = ttl;
    }

    fn set_type_name(&mut self, type_name: Option<String>) {
        self.type_name = type_name;
    }
}

/// The registered states of one backend, in id order ([`StateId`] `n` is
/// entry `n`), with a name index.
///
/// It dereferences to the slice of entries. Entries may be changed in place
/// but not renamed: the name index is only written by
/// [`StateCatalog::register`].
#[derive(Debug, Clone)]
pub struct StateCatalog<S> {
    backend: &'static str,
    states: Vec<S>,
    by_name: HashMap<String, StateId>,
}

impl<S: CatalogEntry> StateCatalog<S> {
    /// An empty catalog; `backend` names the backend in error messages.
    pub fn new(backend: &'static str) -> Self {
        StateCatalog {
            backend,
            states: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// Registers `descriptor`: a state of that name gets the descriptor's TTL
    /// and keeps its id, if its kind is the same (an error if not); a new name
    /// gets the next id and the entry `create` makes. Returns the id and
    /// whether the state is new.
    ///
    /// Type names: a registration without one (byte-level access) keeps the
    /// recorded one; a state recorded without one (an old snapshot) takes the
    /// registered one; a registered type name other than the recorded one is
    /// refused with both names and the state's, unless
    /// [`StateDescriptor::migrate_from`] is the recorded name (the caller
    /// then rewrites the entries) and the state takes the new name. The
    /// catalog never stores `migrate_from`.
    pub fn register(
        &mut self,
        descriptor: &StateDescriptor,
        create: impl FnOnce(&StateDescriptor) -> S,
    ) -> Result<(StateId, bool)> {
        if let Some(&id) = self.by_name.get(&descriptor.name) {
            let s = self.states.get_mut(id.index()).ok_or_else(|| {
                StateError::invalid(format!("state {:?} is lost", descriptor.name))
            })?;
            let kind = s.descriptor().kind;
            if kind != descriptor.kind {
                return Err(StateError::invalid(format!(
                    "state {:?} is registered as {:?}, not {:?}",
                    descriptor.name, kind, descriptor.kind
                )));
            }
            check_type_name(s.descriptor(), descriptor)?;
            if descriptor.type_name.is_some() {
                s.set_type_name(descriptor.type_name.clone());
            }
            s.set_ttl(descriptor.ttl);
            return Ok((id, false));
        }
        let id = StateId(u32::try_from(self.states.len()).map_err(|_| {
            StateError::invalid(format!(
                "{} backend cannot register more than 2^32 states",
                self.backend
            ))
        })?);
        if descriptor.migrate_from.is_some() {
            let stored = StateDescriptor {
                migrate_from: None,
                ..descriptor.clone()
            };
            self.states.push(create(&stored));
        } else {
            self.states.push(create(descriptor));
        }
        self.by_name.insert(descriptor.name.clone(), id);
        Ok((id, true))
    }

    /// The id of the state named `name`, if it is registered.
    pub fn id_of(&self, name: &str) -> Option<StateId> {
        self.by_name.get(name).copied()
    }

    /// Undoes the registration of the newest state (when the backend could
    /// not set it up after [`StateCatalog::register`] returned it as new).
    pub fn unregister_last(&mut self) {
        if let Some(s) = self.states.pop() {
            self.by_name.remove(&s.descriptor().name);
        }
    }

    /// The descriptors of all states, in id order.
    pub fn descriptors(&self) -> Vec<StateDescriptor> {
        self.states.iter().map(|s| s.descriptor().clone()).collect()
    }

    /// The same states (same ids and names) with other entries: `f` makes
    /// each new entry from the old one.
    pub fn map<T: CatalogEntry>(&self, f: impl FnMut(&S) -> T) -> StateCatalog<T> {
        StateCatalog {
            backend: self.backend,
            states: self.states.iter().map(f).collect(),
            by_name: self.by_name.clone(),
        }
    }
}

/// Whether `registered` may take the place of `recorded` as far as type
/// names go (see [`StateCatalog::register`]); the error names both.
fn check_type_name(recorded: &StateDescriptor, registered: &StateDescriptor) -> Result<()> {
    let (Some(old), Some(new)) = (&recorded.type_name, &registered.type_name) else {
        return Ok(());
    };
    if old == new || registered.migrate_from.as_ref() == Some(old) {
        return Ok(());
    }
    Err(StateError::invalid(format!(
        "state {:?} was written with type {old} but is registered with type {new}; \
         register it with type {old}, or with a migration from {old} \
         (ValueStateDescriptor::with_migration)",
        registered.name
    )))
}

impl<S> Deref for StateCatalog<S> {
    type Target = [S];

    fn deref(&self) -> &[S] {
        &self.states
    }
}

impl<S> DerefMut for StateCatalog<S> {
    fn deref_mut(&mut self) -> &mut [S] {
        &mut self.states
    }
}

impl<'a, S> IntoIterator for &'a StateCatalog<S> {
    type Item = &'a S;
    type IntoIter = std::slice::Iter<'a, S>;

    fn into_iter(self) -> Self::IntoIter {
        self.states.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::StateKind;

    #[test]
    fn same_name_same_kind_keeps_id_and_takes_ttl() {
        let mut c = StateCatalog::<StateDescriptor>::new("test");
        let (a, new) = c
            .register(&StateDescriptor::new("a", StateKind::Value), Clone::clone)
            .unwrap();
        assert!(new);
        let (b, _) = c
            .register(&StateDescriptor::new("b", StateKind::Map), Clone::clone)
            .unwrap();
        assert_ne!(a, b);
        let mut again = StateDescriptor::new("a", StateKind::Value);
        again.ttl = Some(TtlConfig::new(std::time::Duration::from_secs(1)).unwrap());
        assert_eq!(c.register(&again, Clone::clone).unwrap(), (a, false));
        assert_eq!(c[a.index()].ttl, again.ttl);
        let err = c
            .register(&StateDescriptor::new("a", StateKind::List), Clone::clone)
            .unwrap_err();
        assert!(err.to_string().contains("is registered as Value"), "{err}");
    }

    #[test]
    fn type_names_are_checked_taken_and_migrated() {
        let mut c = StateCatalog::<StateDescriptor>::new("test");
        let old = StateDescriptor::new("a", StateKind::Value);
        let (a, _) = c.register(&old, Clone::clone).unwrap();
        // A state recorded without a type takes the registered one.
        let typed = old.clone().with_type_name("u64");
        assert_eq!(c.register(&typed, Clone::clone).unwrap(), (a, false));
        assert_eq!(c[a.index()].type_name.as_deref(), Some("u64"));
        // Untyped access keeps it.
        c.register(&old, Clone::clone).unwrap();
        assert_eq!(c[a.index()].type_name.as_deref(), Some("u64"));
        // Another type is refused naming the state and both types.
        let other = old.clone().with_type_name("alloc::string::String");
        let err = c.register(&other, Clone::clone).unwrap_err().to_string();
        assert!(
            err.contains("\"a\"")
                && err.contains("type u64")
                && err.contains("alloc::string::String"),
            "{err}"
        );
        assert_eq!(c[a.index()].type_name.as_deref(), Some("u64"));
        // A migration from a type that is not the recorded one is refused too.
        let mut wrong = other.clone();
        wrong.migrate_from = Some("i32".into());
        assert!(c.register(&wrong, Clone::clone).is_err());
        let mut migrating = other.clone();
        migrating.migrate_from = Some("u64".into());
        c.register(&migrating, Clone::clone).unwrap();
        assert_eq!(c[a.index()], other);
        // A new state never stores migrate_from.
        let mut fresh = StateDescriptor::new("b", StateKind::Value).with_type_name("u8");
        fresh.migrate_from = Some("u16".into());
        let (b, _) = c.register(&fresh, Clone::clone).unwrap();
        assert_eq!(c[b.index()].migrate_from, None);
    }

    #[test]
    fn unregister_last_forgets_the_name() {
        let mut c = StateCatalog::<StateDescriptor>::new("test");
        c.register(&StateDescriptor::new("a", StateKind::Value), Clone::clone)
            .unwrap();
        c.unregister_last();
        assert!(c.is_empty());
        let (id, new) = c
            .register(&StateDescriptor::new("a", StateKind::List), Clone::clone)
            .unwrap();
        assert_eq!((id, new), (StateId(0), true));
    }
}
