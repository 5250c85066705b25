import sys, torch, kt_kernel
n=int(sys.argv[1]); torch.set_num_threads(1); print("tier", kt_kernel.cpu_info()["active_tier"], file=sys.stderr)
E,K,H,I=8,2,512,256
torch.manual_seed(0)
g=torch.randn(E,I,H)/22; u=torch.randn(E,I,H)/22; d=torch.randn(E,H,I)/16
for method in ["AMXINT4","AMXINT8","BF16"]:
    w=kt_kernel.KTMoEWrapper(0,E,K,H,I,num_gpu_experts=0,cpuinfer_threads=2,threadpool_count=1,method=method)
    w.load_weights_from_tensors(g,u,d)
    for M in (1,64):
        x=torch.randn(M,H).bfloat16(); ids=torch.rand(M,E).topk(K,dim=1).indices; tw=torch.rand(M,K)
        for _ in range(n): w.forward(x,ids,tw)
