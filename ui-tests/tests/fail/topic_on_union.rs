use rustmq::Topic;

#[derive(Topic)]
#[topic(name = "raw")]
union Raw {
    int: u32,
    float: f32,
}

fn main() {}
