//! State descriptors: a state's name, kind, types and TTL, as in Flink.
//!
//! Each descriptor records the name of the type it stores
//! ([`std::any::type_name`] by default, [`ValueStateDescriptor::with_type_name`]
//! and friends to override it): a state restored from a snapshot that
//! recorded another type name is refused, unless the descriptor carries a
//! migration from the recorded type ([`ValueStateDescriptor::with_migration`],
//! [`ListStateDescriptor::with_migration`]), which rewrites every entry when
//! the state is registered. Map, reducing and aggregating states do not
//! migrate.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{StateDescriptor, StateKind};
use crate::ttl::TtlConfig;
use crate::{Result, StateError};

/// Converts one stored payload (value or list element, without its TTL
/// stamp) of the recorded type into one of the registered type.
pub(crate) type ConvertFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>> + Send + Sync>;

/// A migration from the recorded type `from` (its type name).
#[derive(Clone)]
pub(crate) struct Migration {
    pub(crate) from: String,
    pub(crate) convert: ConvertFn,
}

impl Migration {
    /// Decodes `Old` with postcard, applies `f`, encodes `New`.
    fn new<Old, New, F>(state: &str, f: F) -> Self
    where
        Old: DeserializeOwned,
        New: Serialize,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        let from = std::any::type_name::<Old>().to_owned();
        let (name, old_name) = (state.to_owned(), from.clone());
        Migration {
            from,
            convert: Arc::new(move |payload: &[u8]| {
                let old: Old = postcard::from_bytes(payload).map_err(|e| {
                    StateError::corrupted(
                        format!("state '{name}'"),
                        format!(
                            "entry of {} bytes does not decode as {old_name} to migrate: {e}",
                            payload.len()
                        ),
                    )
                })?;
                postcard::to_stdvec(&f(old)).map_err(|e| {
                    StateError::invalid(format!(
                        "state '{name}': migrated entry cannot be serialized: {e}"
                    ))
                })
            }),
        }
    }
}

/// A reduce function of a [`ReducingStateDescriptor`].
pub type ReduceFn<T> = Arc<dyn Fn(&T, &T) -> T + Send + Sync>;

/// An aggregate function, as Flink's `AggregateFunction`: folds inputs into
/// an accumulator (the stored state) and derives a result from it.
pub trait AggregateFunction: Send + Sync + 'static {
    /// The type of added values.
    type In;
    /// The accumulator, which is what the state stores.
    type Acc: serde::Serialize + serde::de::DeserializeOwned;
    /// The result type.
    type Out;

    /// A fresh, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;

    /// Adds `value` to `acc` and returns the new accumulator.
    fn add(&self, value: Self::In, acc: Self::Acc) -> Self::Acc;

    /// The result of an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
}

macro_rules! descriptor_common {
    ($ty:ident < $($p:ident),* >, $kind:expr) => {
        impl<$($p),*> $ty<$($p),*> {
            /// The state's name, unique within the operator.
            pub fn name(&self) -> &str {
                &self.name
            }

            /// The same descriptor with entries expiring per `ttl`.
            pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
                self.ttl = Some(ttl);
                self
            }

            /// The state's TTL, if any.
            pub fn ttl(&self) -> Option<TtlConfig> {
                self.ttl
            }

            /// The same descriptor recording `type_name` as its stored type
            /// instead of the Rust type's [`std::any::type_name`] (which may
            /// change with the compiler or a renamed module).
            pub fn with_type_name(mut self, type_name: impl Into<String>) -> Self {
                self.type_name = type_name.into();
                self
            }

            /// The type name recorded with the state in snapshots.
            pub fn type_name(&self) -> &str {
                &self.type_name
            }

            /// The byte-level descriptor registered with the backend.
            pub fn to_backend_descriptor(&self) -> StateDescriptor {
                StateDescriptor {
                    ttl: self.ttl,
                    ..StateDescriptor::new(self.name.clone(), $kind)
                        .with_type_name(self.type_name.clone())
                }
            }
        }

        impl<$($p),*> fmt::Debug for $ty<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.name)
                    .field("ttl", &self.ttl)
                    .field("type_name", &self.type_name)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Describes a [`super::ValueState`] holding one `T` per key and namespace.
pub struct ValueStateDescriptor<T> {
    name: String,
    ttl: Option<TtlConfig>,
    type_name: String,
    pub(crate) migration: Option<Migration>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ValueStateDescriptor<T> {
    /// A value state named `name`, without TTL, recording `T`'s type name.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            ttl: None,
            type_name: std::any::type_name::<T>().to_owned(),
            migration: None,
            _t: PhantomData,
        }
    }
}

impl<T: Serialize> ValueStateDescriptor<T> {
    /// The same descriptor with a migration: when the state is registered
    /// over a snapshot that recorded `Old`'s type name, every value is
    /// decoded as `Old`, converted by `f` and written back (TTL stamps
    /// kept) before the state is used; the state then records `T`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// use state_core::typed::ValueStateDescriptor;
    /// // Counts were u32; they are now u64.
    /// let count = ValueStateDescriptor::<u64>::new("count").with_migration(|old: u32| u64::from(old));
    /// assert_eq!(count.type_name(), "u64");
    /// ```
    pub fn with_migration<Old, F>(mut self, f: F) -> Self
    where
        Old: DeserializeOwned,
        F: Fn(Old) -> T + Send + Sync + 'static,
    {
        self.migration = Some(Migration::new(&self.name, f));
        self
    }
}
descriptor_common!(ValueStateDescriptor<T>, StateKind::Value);

/// Describes a [`super::ListState`] holding a list of `T` per key and namespace.
pub struct ListStateDescriptor<T> {
    name: String,
    ttl: Option<TtlConfig>,
    type_name: String,
    pub(crate) migration: Option<Migration>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ListStateDescriptor<T> {
    /// A list state named `name`, without TTL, recording the element
    /// type `T`'s name.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            ttl: None,
            type_name: std::any::type_name::<T>().to_owned(),
            migration: None,
            _t: PhantomData,
        }
    }
}

impl<T: Serialize> ListStateDescriptor<T> {
    /// The same descriptor with a migration of every element from `Old`
    /// (see [`ValueStateDescriptor::with_migration`]).
    ///
    /// ```
    /// use state_core::typed::ListStateDescriptor;
    /// let seen = ListStateDescriptor::<String>::new("seen").with_migration(|old: u64| old.to_string());
    /// assert_eq!(seen.type_name(), "alloc::string::String");
    /// ```
    pub fn with_migration<Old, F>(mut self, f: F) -> Self
    where
        Old: DeserializeOwned,
        F: Fn(Old) -> T + Send + Sync + 'static,
    {
        self.migration = Some(Migration::new(&self.name, f));
        self
    }
}
descriptor_common!(ListStateDescriptor<T>, StateKind::List);

/// Describes a [`super::MapState`] holding a map from `K` to `V` per key and namespace.
pub struct MapStateDescriptor<K, V> {
    name: String,
    ttl: Option<TtlConfig>,
    type_name: String,
    _t: PhantomData<fn() -> (K, V)>,
}

/// What separates the user-key type from the value type in a map state's
/// type name (`alloc::string::String => u64`).
pub const MAP_TYPE_SEPARATOR: &str = " => ";

impl<K, V> MapStateDescriptor<K, V> {
    /// A map state named `name`, without TTL, recording the type name
    /// `K => V` ([`MAP_TYPE_SEPARATOR`]).
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            ttl: None,
            type_name: format!(
                "{}{MAP_TYPE_SEPARATOR}{}",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            ),
            _t: PhantomData,
        }
    }
}
descriptor_common!(MapStateDescriptor<K, V>, StateKind::Map);

/// Describes a [`super::ReducingState`]: one `T` per key and namespace,
/// folded from added values with a reduce function.
pub struct ReducingStateDescriptor<T> {
    name: String,
    ttl: Option<TtlConfig>,
    type_name: String,
    pub(crate) reduce: ReduceFn<T>,
}

impl<T> ReducingStateDescriptor<T> {
    /// A reducing state named `name` that folds with `reduce(current, added)`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            ttl: None,
            type_name: std::any::type_name::<T>().to_owned(),
            reduce: Arc::new(reduce),
        }
    }
}
descriptor_common!(ReducingStateDescriptor<T>, StateKind::Reducing);

/// Describes an [`super::AggregatingState`]: one accumulator per key and
/// namespace, folded from added values with an [`AggregateFunction`].
pub struct AggregatingStateDescriptor<A> {
    name: String,
    ttl: Option<TtlConfig>,
    type_name: String,
    pub(crate) function: Arc<A>,
}

impl<A: AggregateFunction> AggregatingStateDescriptor<A> {
    /// An aggregating state named `name` using `function`, recording the
    /// accumulator type's name (the accumulator is what is stored).
    pub fn new(name: impl Into<String>, function: A) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            ttl: None,
            type_name: std::any::type_name::<A::Acc>().to_owned(),
            function: Arc::new(function),
        }
    }
}
descriptor_common!(AggregatingStateDescriptor<A>, StateKind::Aggregating);
