//! State descriptors: a state's name, kind, types and TTL, as in Flink.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::backend::{StateDescriptor, StateKind};
use crate::ttl::TtlConfig;

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

            /// The byte-level descriptor registered with the backend.
            pub fn to_backend_descriptor(&self) -> StateDescriptor {
                StateDescriptor {
                    name: self.name.clone(),
                    kind: $kind,
                    ttl: self.ttl,
                }
            }
        }

        impl<$($p),*> fmt::Debug for $ty<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.name)
                    .field("ttl", &self.ttl)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Describes a [`super::ValueState`] holding one `T` per key and namespace.
pub struct ValueStateDescriptor<T> {
    name: String,
    ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ValueStateDescriptor<T> {
    /// A value state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            ttl: None,
            _t: PhantomData,
        }
    }
}
descriptor_common!(ValueStateDescriptor<T>, StateKind::Value);

/// Describes a [`super::ListState`] holding a list of `T` per key and namespace.
pub struct ListStateDescriptor<T> {
    name: String,
    ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> T>,
}

impl<T> ListStateDescriptor<T> {
    /// A list state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            ttl: None,
            _t: PhantomData,
        }
    }
}
descriptor_common!(ListStateDescriptor<T>, StateKind::List);

/// Describes a [`super::MapState`] holding a map from `K` to `V` per key and namespace.
pub struct MapStateDescriptor<K, V> {
    name: String,
    ttl: Option<TtlConfig>,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapStateDescriptor<K, V> {
    /// A map state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            ttl: None,
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
    pub(crate) function: Arc<A>,
}

impl<A: AggregateFunction> AggregatingStateDescriptor<A> {
    /// An aggregating state named `name` using `function`.
    pub fn new(name: impl Into<String>, function: A) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            ttl: None,
            function: Arc::new(function),
        }
    }
}
descriptor_common!(AggregatingStateDescriptor<A>, StateKind::Aggregating);
