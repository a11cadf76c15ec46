fn main() {
    println!("pulsara bridge");
}
