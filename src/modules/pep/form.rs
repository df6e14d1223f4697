//! XEP-0004 data forms as PEP uses them, and the node configuration (XEP-0060 §16.4.4) they
//! carry: parsing a submitted form (bounded), applying `pubsub#…` fields to a [`NodeConfig`],
//! checking publish-options preconditions (XEP-0060 §7.1.5) and rendering the configure form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::xmpp::Element;
use crate::xmpp::ns;

/// `FORM_TYPE` of node configuration forms.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// `FORM_TYPE` of publish-options forms.
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// Most fields read from one form.
pub const MAX_FIELDS: usize = 64;
/// Most values read for one field.
pub const MAX_VALUES: usize = 64;
/// Longest value (bytes) accepted in a form.
pub const MAX_VALUE_LEN: usize = 4096;

/// Why a form or one of its fields was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The element is not a `jabber:x:data` form.
    #[error("not a data form")]
    NotAForm,
    /// Too many fields, values, or a value too long.
    #[error("the form is too large")]
    TooLarge,
    /// The same field appears twice.
    #[error("field {0} appears twice")]
    Duplicate(String),
    /// A field's value is not acceptable.
    #[error("field {field}: unacceptable value {value:?}")]
    BadValue {
        /// The field.
        field: String,
        /// The value given.
        value: String,
    },
    /// A field this server does not support (only in strict mode).
    #[error("unsupported field {0}")]
    Unsupported(String),
}

/// A submitted data form: its type, `FORM_TYPE` and fields (`var` → values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// The form's `type` attribute (`submit`, `cancel`, `form`, `result`).
    pub kind: String,
    /// The hidden `FORM_TYPE` value, if any.
    pub form_type: Option<String>,
    /// Every other field with a `var`, in var order.
    pub fields: BTreeMap<String, Vec<String>>,
}

impl Form {
    /// A submit form of `form_type` with single-valued fields, for server-built requests.
    pub fn submit(form_type: &str, fields: &[(&str, &str)]) -> Form {
        Form {
            kind: "submit".into(),
            form_type: Some(form_type.to_string()),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
        }
    }
}

/// Parses a `<x xmlns='jabber:x:data'/>` element, bounded by [`MAX_FIELDS`], [`MAX_VALUES`]
/// and [`MAX_VALUE_LEN`].
pub fn parse_form(x: &Element) -> Result<Form, FormError> {
    if !x.is("x", ns::DATA) {
        return Err(FormError::NotAForm);
    }
    let mut form = Form {
        kind: x.get_attr("type").unwrap_or("").to_string(),
        ..Form::default()
    };
    let mut seen_type = false;
    for (n, field) in x.children().filter(|c| c.is("field", ns::DATA)).enumerate() {
        if n >= MAX_FIELDS {
            return Err(FormError::TooLarge);
        }
        let Some(var) = field.get_attr("var") else {
            continue;
        };
        let mut values = Vec::new();
        for v in field.children().filter(|c| c.is("value", ns::DATA)) {
            let text = v.text_content();
            if values.len() >= MAX_VALUES || text.len() > MAX_VALUE_LEN || var.len() > MAX_VALUE_LEN
            {
                return Err(FormError::TooLarge);
            }
            values.push(text);
        }
        if var == "FORM_TYPE" {
            if seen_type {
                return Err(FormError::Duplicate(var.to_string()));
            }
            seen_type = true;
            form.form_type = values.into_iter().next();
            continue;
        }
        if form.fields.insert(var.to_string(), values).is_some() {
            return Err(FormError::Duplicate(var.to_string()));
        }
    }
    Ok(form)
}

/// Who may retrieve items and receive notifications (XEP-0060 §4.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessModel {
    /// Contacts subscribed to the owner's presence (the PEP default).
    #[default]
    Presence,
    /// Anyone.
    Open,
    /// The owner and the JIDs it affiliated as members or publishers.
    Whitelist,
}

impl AccessModel {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Presence => "presence",
            AccessModel::Open => "open",
            AccessModel::Whitelist => "whitelist",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "presence" => Some(AccessModel::Presence),
            "open" => Some(AccessModel::Open),
            "whitelist" => Some(AccessModel::Whitelist),
            _ => None,
        }
    }
}

/// When the last published item is sent (XEP-0060 §12.20).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    /// Never.
    Never,
    /// On subscription only (PEP subscriptions are implicit, so in effect never).
    OnSub,
    /// On subscription and whenever a subscriber becomes available (the PEP default).
    #[default]
    OnSubAndPresence,
}

impl SendLast {
    /// The form value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "never" => Some(SendLast::Never),
            "on_sub" => Some(SendLast::OnSub),
            "on_sub_and_presence" => Some(SendLast::OnSubAndPresence),
            _ => None,
        }
    }
}

/// A node's configuration, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#max_items`; `None` is "max" (the server's limit).
    pub max_items: Option<u32>,
    /// `pubsub#persist_items`; when false only the last item is kept.
    pub persist_items: bool,
    /// `pubsub#send_last_published_item`.
    pub send_last_published_item: SendLast,
    /// `pubsub#deliver_notifications`.
    pub deliver_notifications: bool,
    /// `pubsub#deliver_payloads`.
    pub deliver_payloads: bool,
    /// `pubsub#notify_retract`.
    pub notify_retract: bool,
    /// `pubsub#notify_delete`.
    pub notify_delete: bool,
    /// `pubsub#title`.
    pub title: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            access_model: AccessModel::Presence,
            max_items: Some(1),
            persist_items: true,
            send_last_published_item: SendLast::OnSubAndPresence,
            deliver_notifications: true,
            deliver_payloads: true,
            notify_retract: true,
            notify_delete: true,
            title: String::new(),
        }
    }
}

fn boolean(field: &str, v: &str) -> Result<bool, FormError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(bad(field, v)),
    }
}

fn bad(field: &str, value: &str) -> FormError {
    FormError::BadValue {
        field: field.to_string(),
        value: value.to_string(),
    }
}

impl NodeConfig {
    /// How many items the node keeps, given the server's limit.
    pub fn effective_max(&self, server_max: u32) -> u32 {
        if !self.persist_items {
            return 1;
        }
        self.max_items.map_or(server_max, |n| n.min(server_max))
    }

    /// Applies one field; `strict` refuses fields this server does not know.
    pub fn apply_field(
        &mut self,
        var: &str,
        values: &[String],
        server_max: u32,
        strict: bool,
    ) -> Result<(), FormError> {
        let one = values.first().map(String::as_str).unwrap_or("");
        match var {
            "pubsub#access_model" => {
                self.access_model = AccessModel::parse(one).ok_or_else(|| bad(var, one))?;
            }
            "pubsub#max_items" => {
                self.max_items = if one == "max" {
                    None
                } else {
                    let n: u32 = one.trim().parse().map_err(|_| bad(var, one))?;
                    if n == 0 || n > server_max {
                        return Err(bad(var, one));
                    }
                    Some(n)
                };
            }
            "pubsub#persist_items" => self.persist_items = boolean(var, one)?,
            "pubsub#send_last_published_item" => {
                self.send_last_published_item =
                    SendLast::parse(one).ok_or_else(|| bad(var, one))?;
            }
            "pubsub#deliver_notifications" => self.deliver_notifications = boolean(var, one)?,
            "pubsub#deliver_payloads" => self.deliver_payloads = boolean(var, one)?,
            "pubsub#notify_retract" => self.notify_retract = boolean(var, one)?,
            "pubsub#notify_delete" => self.notify_delete = boolean(var, one)?,
            "pubsub#title" => {
                if one.len() > 1024 {
                    return Err(bad(var, one));
                }
                self.title = one.to_string();
            }
            // PEP nodes only ever have the owner as publisher.
            "pubsub#publish_model" if one == "publishers" => {}
            "pubsub#publish_model" => return Err(bad(var, one)),
            _ if strict => return Err(FormError::Unsupported(var.to_string())),
            _ => {}
        }
        Ok(())
    }

    /// Applies every field of `form` (all or nothing).
    pub fn apply(&mut self, form: &Form, server_max: u32, strict: bool) -> Result<(), FormError> {
        let mut next = self.clone();
        for (var, values) in &form.fields {
            next.apply_field(var, values, server_max, strict)?;
        }
        *self = next;
        Ok(())
    }

    /// The first publish-options field this configuration does not satisfy (XEP-0060 §7.1.5),
    /// or `None` when every precondition holds. Unknown fields and bad values never hold.
    pub fn unmet_precondition(&self, form: &Form, server_max: u32) -> Option<String> {
        let have = self.normalized(server_max);
        for (var, values) in &form.fields {
            let mut want = self.clone();
            if want.apply_field(var, values, server_max, true).is_err()
                || want.normalized(server_max) != have
            {
                return Some(var.clone());
            }
        }
        None
    }

    /// The configuration with `max_items` at or above the server limit written as "max".
    fn normalized(&self, server_max: u32) -> NodeConfig {
        let mut c = self.clone();
        if c.max_items.is_some_and(|n| n >= server_max) {
            c.max_items = None;
        }
        c
    }

    /// The `pubsub#node_config` form (`type='form'`) showing this configuration.
    pub fn to_form(&self) -> Element {
        fn field(var: &str, ty: &str, value: &str) -> Element {
            Element::new("field", ns::DATA)
                .attr("var", var)
                .attr("type", ty)
                .child(Element::new("value", ns::DATA).text(value))
        }
        fn list(var: &str, value: &str, options: &[&str]) -> Element {
            let mut f = field(var, "list-single", value);
            for o in options {
                f.push(
                    Element::new("option", ns::DATA)
                        .child(Element::new("value", ns::DATA).text(*o)),
                );
            }
            f
        }
        let b = |v: bool| if v { "1" } else { "0" };
        let max = self
            .max_items
            .map_or_else(|| "max".to_string(), |n| n.to_string());
        Element::new("x", ns::DATA)
            .attr("type", "form")
            .child(field("FORM_TYPE", "hidden", NODE_CONFIG))
            .child(list(
                "pubsub#access_model",
                self.access_model.as_str(),
                &["open", "presence", "whitelist"],
            ))
            .child(field("pubsub#max_items", "text-single", &max))
            .child(field(
                "pubsub#persist_items",
                "boolean",
                b(self.persist_items),
            ))
            .child(list(
                "pubsub#send_last_published_item",
                self.send_last_published_item.as_str(),
                &["never", "on_sub", "on_sub_and_presence"],
            ))
            .child(field(
                "pubsub#deliver_notifications",
                "boolean",
                b(self.deliver_notifications),
            ))
            .child(field(
                "pubsub#deliver_payloads",
                "boolean",
                b(self.deliver_payloads),
            ))
            .child(field(
                "pubsub#notify_retract",
                "boolean",
                b(self.notify_retract),
            ))
            .child(field(
                "pubsub#notify_delete",
                "boolean",
                b(self.notify_delete),
            ))
            .child(field("pubsub#title", "text-single", &self.title))
            .child(list("pubsub#publish_model", "publishers", &["publishers"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::parser::parse_element;

    fn form(xml: &str) -> Result<Form, FormError> {
        parse_form(&parse_element(xml).unwrap())
    }

    #[test]
    fn parses_fields_and_form_type() {
        let f = form(
            "<x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
               <field var='pubsub#access_model'><value>whitelist</value></field>\
               <field var='pubsub#max_items'><value>max</value></field>\
               <field type='fixed'><value>ignored</value></field>\
             </x>",
        )
        .unwrap();
        assert_eq!(f.kind, "submit");
        assert_eq!(f.form_type.as_deref(), Some(PUBLISH_OPTIONS));
        assert_eq!(f.fields.len(), 2);
        assert_eq!(f.fields["pubsub#access_model"], vec!["whitelist"]);
    }

    #[test]
    fn refuses_duplicates_oversize_and_non_forms() {
        assert_eq!(
            form("<x xmlns='jabber:x:data'><field var='a'/><field var='a'/></x>"),
            Err(FormError::Duplicate("a".into()))
        );
        assert_eq!(form("<x xmlns='urn:other'/>"), Err(FormError::NotAForm));
        let many: String = (0..=MAX_FIELDS)
            .map(|i| format!("<field var='f{i}'/>"))
            .collect();
        assert_eq!(
            form(&format!("<x xmlns='jabber:x:data'>{many}</x>")),
            Err(FormError::TooLarge)
        );
        let long = "v".repeat(MAX_VALUE_LEN + 1);
        assert_eq!(
            form(&format!(
                "<x xmlns='jabber:x:data'><field var='a'><value>{long}</value></field></x>"
            )),
            Err(FormError::TooLarge)
        );
    }

    #[test]
    fn applies_config_fields_all_or_nothing() {
        let mut c = NodeConfig::default();
        let f = Form::submit(
            NODE_CONFIG,
            &[
                ("pubsub#access_model", "open"),
                ("pubsub#max_items", "10"),
                ("pubsub#persist_items", "true"),
                ("pubsub#send_last_published_item", "never"),
            ],
        );
        c.apply(&f, 256, true).unwrap();
        assert_eq!(c.access_model, AccessModel::Open);
        assert_eq!(c.max_items, Some(10));
        assert_eq!(c.send_last_published_item, SendLast::Never);
        let bad = Form::submit(
            NODE_CONFIG,
            &[
                ("pubsub#access_model", "presence"),
                ("pubsub#max_items", "x"),
            ],
        );
        assert!(c.apply(&bad, 256, true).is_err());
        assert_eq!(c.access_model, AccessModel::Open, "unchanged on error");
        let too_many = Form::submit(NODE_CONFIG, &[("pubsub#max_items", "257")]);
        assert!(c.apply(&too_many, 256, true).is_err());
        let unknown = Form::submit(NODE_CONFIG, &[("pubsub#whatever", "1")]);
        assert_eq!(
            c.apply(&unknown, 256, true),
            Err(FormError::Unsupported("pubsub#whatever".into()))
        );
        assert!(c.apply(&unknown, 256, false).is_ok(), "lenient ignores it");
    }

    #[test]
    fn preconditions_compare_effective_values() {
        let mut c = NodeConfig::default();
        c.apply(
            &Form::submit(NODE_CONFIG, &[("pubsub#max_items", "max")]),
            256,
            true,
        )
        .unwrap();
        let ok = Form::submit(
            PUBLISH_OPTIONS,
            &[
                ("pubsub#persist_items", "1"),
                ("pubsub#max_items", "max"),
                ("pubsub#access_model", "presence"),
            ],
        );
        assert_eq!(c.unmet_precondition(&ok, 256), None);
        let same_max = Form::submit(PUBLISH_OPTIONS, &[("pubsub#max_items", "256")]);
        assert_eq!(c.unmet_precondition(&same_max, 256), None);
        let other = Form::submit(PUBLISH_OPTIONS, &[("pubsub#access_model", "whitelist")]);
        assert_eq!(
            c.unmet_precondition(&other, 256).as_deref(),
            Some("pubsub#access_model")
        );
        let unknown = Form::submit(PUBLISH_OPTIONS, &[("pubsub#frob", "1")]);
        assert!(c.unmet_precondition(&unknown, 256).is_some());
        assert_eq!(c.effective_max(256), 256);
        c.persist_items = false;
        assert_eq!(c.effective_max(256), 1);
    }

    #[test]
    fn config_form_round_trips() {
        let c = NodeConfig {
            access_model: AccessModel::Whitelist,
            max_items: None,
            ..NodeConfig::default()
        };
        let x = c.to_form();
        let f = parse_form(&x).unwrap();
        assert_eq!(f.form_type.as_deref(), Some(NODE_CONFIG));
        let mut d = NodeConfig::default();
        d.apply(&f, 256, true).unwrap();
        assert_eq!(d, c);
    }
}
