//! Which models a silo keeps outside its cache.

use std::time::Duration;

use fedsilo::protocol::{call, ModelRef, Request, Response};

use super::{put_model, trainer};

/// The two models last asked about with `Holds` (a frozen base, then a round's base) stay held
/// however many models are sent after them; a third pinned one lets the oldest go.
#[tokio::test]
async fn the_models_asked_about_last_stay_held_while_others_fill_the_cache() {
    let t = trainer().await;
    let holds = |m: ModelRef| {
        let t = t.clone();
        async move {
            match call(
                &t,
                &Request::Holds { model: m },
                Duration::from_secs(5),
                "t",
            )
            .await
            .unwrap()
            {
                Response::Holds { held } => held,
                other => panic!("{other:?}"),
            }
        }
    };
    let frozen = put_model(&t, vec![1.0; 8]).await;
    let base = put_model(&t, vec![2.0; 8]).await;
    assert!(holds(frozen).await && holds(base).await);
    // More models than the cache keeps.
    let mut later = vec![];
    for i in 0..5 {
        later.push(put_model(&t, vec![10.0 + i as f32; 8]).await);
    }
    assert!(!holds(later[0]).await, "evicted from the cache");
    assert!(holds(frozen).await && holds(base).await, "pinned");
    // Pinning a third (the latest cached) lets the oldest pinned one go once it is evicted.
    assert!(holds(later[4]).await);
    for i in 0..4 {
        put_model(&t, vec![20.0 + i as f32; 8]).await;
    }
    assert!(!holds(frozen).await, "the oldest pin was let go");
    assert!(holds(base).await && holds(later[4]).await);
}
