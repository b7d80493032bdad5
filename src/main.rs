fn main() {
    println!("unreid: under construction");
}
