//! Marvin's library: everything Marvin knows and does.
//!
//! Front ends (CLI, Slack, Telegram, web, Python) call into this crate; it
//! never imports a front end. The decision-making parts are pure (no I/O, no
//! clock): [`config`], [`compose`], [`keys`], [`plan`], [`desired`],
//! [`dockerfile`], [`suggest`], [`swarm`], and for chat [`command`],
//! [`access`], [`locks`], [`redact`], [`render`], and for triggers
//! [`webhook`], [`coalesce`], [`schedule`], [`poll`]. The I/O sits behind
//! small ports:
//! [`source`] (git via gix), [`engine`] (Docker via bollard), [`store`]
//! (SQLite).

pub mod access;
pub mod attention;
pub mod channels;
pub mod chat;
pub mod coalesce;
pub mod command;
pub mod commands;
pub mod compose;
pub mod config;
pub mod demo;
pub mod desired;
pub mod dockerfile;
pub mod duration;
pub mod engine;
pub mod files;
pub mod keys;
pub mod locks;
pub mod marvin;
pub mod materialize;
pub mod plan;
pub mod poll;
pub mod redact;
pub mod render;
pub mod report;
pub mod resolve;
pub mod runtime;
pub mod schedule;
pub mod source;
pub mod store;
pub mod suggest;
pub mod swarm;
pub mod triggers;
pub mod webhook;
pub mod yaml;
