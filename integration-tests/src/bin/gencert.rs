//! `gencert DIR`: a throwaway CA and a `localhost` certificate for benchmarks and demos
//! (writes `ca.pem`, `cert.pem`, `key.pem`). Never use these for anything real.

use integration_tests::certs::TestCa;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let ca = TestCa::new()?;
    let leaf = ca.issue(&["localhost"])?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), leaf.cert_pem)?;
    std::fs::write(dir.join("key.pem"), leaf.key_pem)?;
    Ok(())
}
