//! An enum whose variants each have one fixed text: the form it has in a database column, a
//! JSON document, a query string and a log line alike. `text_enum!` derives everything from
//! the table of variants and texts — `as_str`/`parse`, `FromStr`, `Display`, `Serialize`
//! and `Deserialize` — so a state is parsed once where it enters and never compared as a
//! string. The vocabulary modules (`job`, `outcome`, `alert`) declare their enums with it;
//! `store` only adds the column encoding (`store::columns`).

/// A text that names no variant of the enum it was read as; it says which texts would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid {what} (one of: {})", expected.join(", "))]
pub struct UnknownText {
    pub what: &'static str,
    pub text: String,
    pub expected: &'static [&'static str],
}

/// An enum and the text each variant is written as, with everything derived from that pair.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text_enum::UnknownText;
            fn from_str(text: &str) -> Result<$name, $crate::text_enum::UnknownText> {
                $name::parse(text).ok_or_else(|| $crate::text_enum::UnknownText {
                    what: $what,
                    text: text.to_owned(),
                    expected: &[$($text),+],
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        // As an enum of unit variants named by their texts (what `#[derive(Deserialize)]`
        // does), so a format that lists an enum's values (the configuration reference's
        // tracer) sees them; a plain string is read as well.
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                struct Text;
                impl<'de> serde::de::Visitor<'de> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a {}", $what)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        text.parse::<$name>().map_err(E::custom)
                    }
                    fn visit_enum<A: serde::de::EnumAccess<'de>>(
                        self,
                        data: A,
                    ) -> Result<$name, A::Error> {
                        use serde::de::VariantAccess;
                        let (text, variant) = data.variant::<String>()?;
                        variant.unit_variant()?;
                        text.parse::<$name>().map_err(serde::de::Error::custom)
                    }
                }
                d.deserialize_enum(stringify!($name), &[$($text),+], Text)
            }
        }
    };
}

pub(crate) use text_enum;
