import sys, time, statistics, torch, kt_kernel
sys.path.insert(0, "benchmarks")
torch.manual_seed(0)
E,K,H,I=64,8,2048,768
g=torch.randn(E,I,H,dtype=torch.bfloat16)/45; u=torch.randn(E,I,H,dtype=torch.bfloat16)/45; d=torch.randn(E,H,I,dtype=torch.bfloat16)/28
out=[]
for method in sys.argv[2].split(","):
    w=kt_kernel.KTMoEWrapper(0,E,K,H,I,num_gpu_experts=0,cpuinfer_threads=2,threadpool_count=1,method=method)
    w.load_weights_from_tensors(g,u,d)
    for M in (1,8):
        x=torch.randn(M,H).bfloat16(); ids=torch.rand(M,E).topk(K,dim=1).indices; tw=torch.rand(M,K)
        for _ in range(50): w.forward(x,ids,tw)
        ts=[]
        for _ in range(400 if M==1 else 100):
            t=time.perf_counter(); w.forward(x,ids,tw); ts.append(time.perf_counter()-t)
        out.append(f"{method} M{M} med {statistics.median(ts)*1e3:.3f} min {min(ts)*1e3:.3f}")
    del w
print(sys.argv[1], " | ".join(out), flush=True)
