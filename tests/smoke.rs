mod common;
use unreid::Tensor;

#[test]
fn add_and_matmul_round_trip() {
    let g = common::gpu();
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0], &[2, 2], &g).unwrap();
    let b = Tensor::from_slice(&[10.0, 20.0], &[2], &g).unwrap();
    assert_eq!(
        a.add(&b).unwrap().to_vec().unwrap(),
        vec![11.0, 22.0, 13.0, 24.0]
    );
    assert_eq!(
        a.matmul(&a).unwrap().to_vec().unwrap(),
        vec![7.0, 10.0, 15.0, 22.0]
    );
    assert_eq!(a.sum(1, false).unwrap().to_vec().unwrap(), vec![3.0, 7.0]);
}
