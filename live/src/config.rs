//! What the live engines do: `[stage.fraud]`, `[stage.recommendations]` and
//! `stage.live_rebuild_hours` of the pipeline config file (they sit in `[stage]` because the stage
//! feeds them; the binary's config splits that table between the stage and this crate).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::recs::RecsConfig;

/// The live engines' settings in `[stage]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// When the live state (fraud windows, recommendations) has no saved copy, it is rebuilt from
    /// this many hours of the lake's events before the stage starts reading the stream.
    pub live_rebuild_hours: u64,
    /// Real-time fraud scoring (`[stage.fraud]`).
    pub fraud: FraudConfig,
    /// Live recommendations (`[stage.recommendations]`).
    pub recommendations: RecommendationsConfig,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            live_rebuild_hours: 72,
            fraud: FraudConfig::default(),
            recommendations: RecommendationsConfig::default(),
        }
    }
}

impl LiveConfig {
    /// The keys of `[stage]` that are this config's.
    pub const KEYS: [&'static str; 3] = ["live_rebuild_hours", "fraud", "recommendations"];
}

/// `[stage.fraud]`: real-time fraud scoring.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// Score orders in the stream and serve `POST /v1/fraud/score`.
    pub enabled: bool,
    /// The rules file (TOML); the built-in rules when absent. Re-read when it changes: a file
    /// that does not parse is refused with its line and reason, and the running rules stay.
    pub rules_file: Option<PathBuf>,
    /// How often the rules file is checked for changes, in milliseconds.
    pub reload_interval_ms: u64,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            enabled: true,
            rules_file: None,
            reload_interval_ms: 2_000,
        }
    }
}

/// `[stage.recommendations]`: live recommendations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecommendationsConfig {
    /// Keep recommendation state and serve the recommendation endpoints (on unless false).
    pub enabled: Option<bool>,
    /// The model: decay, normalisation, windows and caps.
    pub model: RecsConfig,
}

impl RecommendationsConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}
