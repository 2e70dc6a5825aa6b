//! One watch feeding several controllers: each subscriber gets its own copy of every object sent,
//! as a stream a controller's `watches_stream` or `owns_stream` takes. Used by the per-namespace
//! Secret watches (`secrets.rs`) and the Node watch (`nodes.rs`).

use std::sync::Mutex;

use kube::runtime::watcher;
use tokio::sync::mpsc;

pub struct Fanout<T> {
    subscribers: Mutex<Vec<mpsc::UnboundedSender<T>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout { subscribers: Mutex::new(Vec::new()) }
    }
}

impl<T: Clone + Send + 'static> Fanout<T> {
    /// A stream of every object sent from now on.
    pub fn subscribe(&self) -> impl futures::Stream<Item = Result<T, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (Ok(o), rx)) })
    }

    /// Sends `objects` to every subscriber; a subscriber whose stream is gone is forgotten.
    pub fn send(&self, objects: &[T]) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| objects.iter().all(|o| tx.send(o.clone()).is_ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn every_subscriber_gets_every_object_and_a_dropped_one_is_forgotten() {
        let f = Fanout::<u32>::default();
        let (mut a, b) = (f.subscribe().boxed(), f.subscribe());
        drop(b);
        f.send(&[1, 2]);
        assert_eq!(f.subscribers.lock().unwrap().len(), 1);
        assert_eq!(a.next().await.unwrap().unwrap(), 1);
        assert_eq!(a.next().await.unwrap().unwrap(), 2);
    }
}
