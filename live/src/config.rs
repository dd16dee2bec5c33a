//! What the live engines do: `[stage.fraud]`, `[stage.recommendations]` and
//! `stage.live_rebuild` of the pipeline config file (they sit in `[stage]` because the stage
//! feeds them; the binary's config splits that table between the stage and this crate).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::recs::RecsConfig;

/// The live engines' settings in `[stage]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// When the live state (fraud windows, recommendations) has no saved copy, it is rebuilt from
    /// this much of the lake's latest events (`"72h"`) before the stage starts reading the
    /// stream; `"0s"` starts empty.
    #[serde(with = "humantime_serde")]
    pub live_rebuild: Duration,
    /// Real-time fraud scoring (`[stage.fraud]`).
    pub fraud: FraudConfig,
    /// Live recommendations (`[stage.recommendations]`).
    pub recommendations: RecommendationsConfig,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            live_rebuild: Duration::from_secs(72 * 3_600),
            fraud: FraudConfig::default(),
            recommendations: RecommendationsConfig::default(),
        }
    }
}

impl LiveConfig {
    /// The keys of `[stage]` that are this config's.
    pub const KEYS: [&'static str; 3] = ["live_rebuild", "fraud", "recommendations"];
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
    /// How often the rules file is checked for changes (`"2s"`).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            enabled: true,
            rules_file: None,
            reload_interval: Duration::from_secs(2),
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
