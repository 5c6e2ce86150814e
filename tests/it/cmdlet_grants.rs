//! Exchange's cmdlet window in the store, against a real PostgreSQL (issue 35): a batch
//! takes what the directory predicts it runs, and settles what really ran — more than it
//! took when its account's path changed meanwhile — so that the window counts every cmdlet
//! Exchange counted.

use crate::common;

use std::time::Duration;

use common::TestDatabase;
use mailboxd::store::CmdletTake;

const MAX: u32 = 40;
/// Long enough that nothing leaves the window while the test runs.
const WINDOW: Duration = Duration::from_secs(60);

fn granted(take: CmdletTake) -> i64 {
    match take {
        CmdletTake::Granted(id) => id,
        CmdletTake::Full { room_in } => panic!("no room (frees in {room_in:?})"),
    }
}

#[tokio::test]
async fn a_batch_that_ran_more_than_it_took_counts_what_ran_and_the_next_waits_for_it() {
    let db = TestDatabase::create(&common::fresh_tag()).await;
    let hold = WINDOW * 2;
    // Two batches expected to run 10 cmdlets each (new joiners and the session's).
    let a = granted(db.take_cmdlets("r1", 10, MAX, hold).await.unwrap());
    let b = granted(db.take_cmdlets("r2", 10, MAX, hold).await.unwrap());
    assert_eq!(db.cmdlets_in_window().await.unwrap(), 20);

    // One ran 16: AD changed meanwhile (a rehire's Get and Set besides the Enable); the
    // other ran fewer than it took.
    db.settle_cmdlets(a, 16, WINDOW).await.unwrap();
    db.settle_cmdlets(b, 7, WINDOW).await.unwrap();
    assert_eq!(db.cmdlets_in_window().await.unwrap(), 23);

    // 17 are left, not the 23 a window that dropped the overrun would show.
    match db.take_cmdlets("r3", 18, MAX, hold).await.unwrap() {
        CmdletTake::Full { room_in } => assert!(
            room_in > WINDOW - Duration::from_secs(10) && room_in <= WINDOW,
            "room in {room_in:?}"
        ),
        CmdletTake::Granted(_) => panic!("took 18 of the 17 left"),
    }
    granted(db.take_cmdlets("r3", 17, MAX, hold).await.unwrap());
    assert_eq!(db.cmdlets_in_window().await.unwrap(), i64::from(MAX));
}
