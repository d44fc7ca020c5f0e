//! Takes a seat, keeps it while "working", and gives it back: the smallest complete use of the
//! SDK. Run it against a server (see the README's tour for a license and a user token):
//!
//! ```sh
//! LEASEHOLD_URL=http://127.0.0.1:8470 LEASEHOLD_TOKEN=lh_usr_... \
//!   cargo run -p leasehold-client --example checkout -- LICENSE_ID [SECONDS]
//! ```

use std::time::Duration;

use leasehold_client::{CheckoutOptions, Client, Clock, LeaseStatus, SystemClock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let license = args.next().ok_or("usage: checkout LICENSE_ID [SECONDS]")?;
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let url = std::env::var("LEASEHOLD_URL").unwrap_or_else(|_| "http://127.0.0.1:8470".into());
    let token = std::env::var("LEASEHOLD_TOKEN").map_err(|_| "set LEASEHOLD_TOKEN")?;

    let client = Client::with_token(&url, token)?;
    // Wait up to 30 s when the license queues; verify the signed lease with the server's keys.
    let options = CheckoutOptions::new().wait_secs(30).verify_leases();
    let guard = match client
        .checkout_with(&license, "example-host", "example-1", options)
        .await
    {
        Ok(guard) => guard,
        Err(err) if err.is_no_seat_available() => {
            eprintln!("all seats are in use: {err}");
            std::process::exit(75);
        }
        Err(err) => return Err(err.into()),
    };
    println!(
        "seat taken: session {} until {}",
        guard.session_id(),
        guard.expires_at()
    );

    // Offline check of the lease (what an app does when the server is briefly unreachable).
    let verifier = client.lease_verifier().await?;
    let claims = verifier.verify(&guard.lease().unwrap_or_default(), SystemClock.now_unix())?;
    println!(
        "lease verified offline: {} on {}",
        claims.sub, claims.device_id
    );

    // "Work", stopping early if the seat is lost (revoked by an admin, say).
    let mut status = guard.subscribe();
    let work = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(work);
    loop {
        tokio::select! {
            () = &mut work => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                if let LeaseStatus::Lost { reason } = &*status.borrow() {
                    eprintln!("seat lost: {reason}");
                    std::process::exit(76);
                }
            }
        }
    }

    guard.release().await?;
    println!("seat returned");
    Ok(())
}
