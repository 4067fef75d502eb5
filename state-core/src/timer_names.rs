//! The names of the internal states that hold timers: written by
//! [`crate::TimerService`], reserved for it by the typed layer.

/// The prefix of the names of the internal timer states; user states may not use it.
pub const TIMER_STATE_PREFIX: &str = "_timers/";
/// The state holding event-time timers.
pub const EVENT_TIME_TIMERS: &str = "_timers/event";
/// The state holding processing-time timers.
pub const PROCESSING_TIME_TIMERS: &str = "_timers/processing";
