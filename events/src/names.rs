//! The closed set of event names of the contract, after the Segment e-commerce spec v2, stored in
//! snake_case, plus the other calls of the Segment tracking API (`screen`, `alias`, `group`) and
//! `custom`: a track event outside the e-commerce spec, whose own name is kept in
//! `custom_event_name` and whose properties are kept like any event's (typed where the contract
//! has a column, the rest in `extra_properties`).

use std::fmt;
use std::str::FromStr;

macro_rules! event_names {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// Every event the contract knows. Anything else is a bad row (`unknown_event`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventName { $($variant),+ }

        impl EventName {
            /// All names, in declaration order.
            pub const ALL: &'static [EventName] = &[$(EventName::$variant),+];

            /// The snake_case name stored in the `event_name` column.
            pub fn as_str(self) -> &'static str {
                match self { $(EventName::$variant => $name),+ }
            }
        }

        impl FromStr for EventName {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($name => Ok(EventName::$variant),)+ _ => Err(()) }
            }
        }
    };
}

event_names! {
    PageViewed => "page_viewed",
    ProductsSearched => "products_searched",
    ProductListViewed => "product_list_viewed",
    ProductViewed => "product_viewed",
    ProductClicked => "product_clicked",
    ProductAdded => "product_added",
    ProductRemoved => "product_removed",
    CartViewed => "cart_viewed",
    CheckoutStarted => "checkout_started",
    CheckoutStepCompleted => "checkout_step_completed",
    PaymentInfoEntered => "payment_info_entered",
    OrderCompleted => "order_completed",
    OrderUpdated => "order_updated",
    OrderCancelled => "order_cancelled",
    OrderRefunded => "order_refunded",
    CouponApplied => "coupon_applied",
    PromotionViewed => "promotion_viewed",
    PromotionClicked => "promotion_clicked",
    WishlistProductAdded => "wishlist_product_added",
    ProductReviewed => "product_reviewed",
    SignedUp => "signed_up",
    LoggedIn => "logged_in",
    Identify => "identify",
    PaymentAuthorized => "payment_authorized",
    PaymentFailed => "payment_failed",
    OrderShipped => "order_shipped",
    OrderDelivered => "order_delivered",
    ReturnRequested => "return_requested",
    ScreenViewed => "screen_viewed",
    Alias => "alias",
    Group => "group",
    Custom => "custom",
}

impl EventName {
    /// Events about one product (the `products` list holds exactly that product).
    pub fn is_single_product(self) -> bool {
        matches!(
            self,
            EventName::ProductViewed
                | EventName::ProductClicked
                | EventName::ProductAdded
                | EventName::ProductRemoved
                | EventName::WishlistProductAdded
                | EventName::ProductReviewed
        )
    }

    /// Events that change an order's state; they feed the `orders` table.
    pub fn is_order_lifecycle(self) -> bool {
        matches!(
            self,
            EventName::OrderCompleted
                | EventName::OrderUpdated
                | EventName::OrderCancelled
                | EventName::OrderRefunded
                | EventName::PaymentAuthorized
                | EventName::PaymentFailed
                | EventName::OrderShipped
                | EventName::OrderDelivered
                | EventName::ReturnRequested
        )
    }

    /// Events identifying a known user: `user_id` is required.
    pub fn requires_user_id(self) -> bool {
        matches!(
            self,
            EventName::SignedUp | EventName::LoggedIn | EventName::Identify | EventName::Alias
        )
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(EventName::ALL.len(), 32);
        for name in EventName::ALL {
            assert_eq!(name.as_str().parse::<EventName>(), Ok(*name));
        }
        assert!("Order Completed".parse::<EventName>().is_err());
    }
}
