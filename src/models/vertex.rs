//! The object form of a Vertex alias: `{"model": id, "location": loc}`, or `"locations":
//! [loc, …]` for failover, either with `"defaults": {…}`.

use serde_json::{Map, Value};

use super::{Route, defaults_of, is_location, normalise_model_id};

const FIELDS: [&str; 4] = ["model", "location", "locations", "defaults"];

/// The route for a Vertex alias's object, or every error in it.
pub fn route(fields: &Map<String, Value>, default_location: &str) -> Result<Route, Vec<String>> {
    let mut errors = Vec::new();
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        errors.push(format!(
            "unknown field {unknown:?} (allowed: model, location, locations, defaults; or upstream, model, audience, auth_header, defaults for a service)"
        ));
    }
    let locations = locations_of(fields).unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let defaults = defaults_of(fields.get("defaults")).unwrap_or_else(|e| {
        errors.push(e);
        Map::new()
    });
    let model = match fields.get("model").and_then(Value::as_str) {
        Some(model) => normalise_model_id(model).map_err(|e| errors.push(e)).ok(),
        None => {
            errors.push(
                "needs \"model\": a Vertex model id such as \"google/gemini-2.5-flash\"".into(),
            );
            None
        }
    };
    match model {
        Some(model) if errors.is_empty() => {
            let mut route = Route::vertex(model, default_location.to_owned());
            if let Some(locations) = locations {
                route.locations = locations;
            }
            route.defaults = defaults;
            Ok(route)
        }
        _ => Err(errors),
    }
}

/// An alias's `location` (one) or `locations` (tried in turn when one fails), if given.
fn locations_of(fields: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    const WHAT: &str = "a Vertex location such as \"us-central1\" or \"global\"";
    match (fields.get("location"), fields.get("locations")) {
        (Some(_), Some(_)) => Err("give \"location\" or \"locations\", not both".into()),
        (None, None) => Ok(None),
        (Some(Value::String(loc)), None) if is_location(loc) => Ok(Some(vec![loc.clone()])),
        (Some(_), None) => Err(format!("\"location\" must be {WHAT}")),
        (None, Some(Value::Array(list))) if !list.is_empty() => {
            let mut locations = Vec::new();
            for loc in list {
                match loc.as_str() {
                    Some(loc) if is_location(loc) => locations.push(loc.to_owned()),
                    _ => return Err(format!("each of \"locations\" must be {WHAT}")),
                }
            }
            Ok(Some(locations))
        }
        (None, Some(_)) => Err(format!(
            "\"locations\" must be a non-empty list, each {WHAT}"
        )),
    }
}
