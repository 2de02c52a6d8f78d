using QubesFirewall.Engine.AdminApi;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Tests.AdminApi;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// What the engine asks of a backend instead of testing its class: whether changes reach running qubes or a
/// state folder, the names for completion, the call count -Verbose reports.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class BackendCapabilityTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    [Fact]
    public void The_offline_root_records_and_needs_nothing_running_the_live_backend_reaches_running_qubes()
    {
        IQubesBackend offline = new OfflineRoot(_live.Root);
        IQubesBackend live = _live.NewBackend();
        Assert.False(offline.RunsInQubes);
        Assert.True(live.RunsInQubes);
        Assert.False(DeploymentOptions.For(offline, DateTimeOffset.UnixEpoch).RequireRunning);
        Assert.True(DeploymentOptions.For(live, DateTimeOffset.UnixEpoch).RequireRunning);
    }

    [Fact]
    public void Names_for_completion_cost_one_list_call_live_and_equal_the_inventory()
    {
        IQubesBackend live = _live.NewBackend();
        _live.Server.ClearCalls();
        var names = live.ListQubeNames();
        Assert.Equal(["admin.vm.List"], _live.Server.Calls.Select(c => c.Method));
        Assert.Equal(1L, live.CallCount);
        IQubesBackend offline = new OfflineRoot(_live.Root);
        Assert.Equal(offline.GetInventory().Qubes.Select(q => q.Name).Order(StringComparer.Ordinal), names.Order(StringComparer.Ordinal));
        Assert.Contains("sys-firewall", names);
        Assert.Null(offline.CallCount);
    }
}
