using QubesFirewall.Engine;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Tests;

/// <summary>Qube names as core-admin's qubes.vm.validate_name accepts them.</summary>
public sealed class QubeNameTests
{
    [Theory]
    [InlineData("work")]
    [InlineData("sys-net")]
    [InlineData("dom0")]
    [InlineData("a")]
    [InlineData("A1")]
    [InlineData("fedora-42-xfce")]
    [InlineData("a.b_c-d")]
    [InlineData("None")]            // only lower-case 'none' is reserved
    [InlineData("Default")]
    [InlineData("dm")]
    [InlineData("work-dm1")]
    [InlineData("abcdefghijabcdefghijabcdefghija")] // 31 characters
    public void Valid(string name)
    {
        Assert.True(QubeName.IsValid(name));
        Assert.Null(QubeName.Problem(name));
        Assert.Equal(name, QubeName.Validate(name));
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData("abcdefghijabcdefghijabcdefghijab", "shorter than 32")] // 32 characters
    [InlineData("1work", "cannot start")]
    [InlineData("-work", "cannot start")]
    [InlineData("_work", "cannot start")]
    [InlineData(".work", "cannot start")]
    [InlineData("work mail", "only ASCII letters")]
    [InlineData("work;reboot", "only ASCII letters")]
    [InlineData("a/b", "only ASCII letters")]
    [InlineData("lost+found", "only ASCII letters")]
    [InlineData("wörk", "only ASCII letters")]
    [InlineData("work\n", "only ASCII letters")]
    [InlineData("K\u212Aelvin", "only ASCII letters")] // Kelvin sign: not an ASCII letter
    [InlineData("none", "cannot be named 'none'")]
    [InlineData("default", "cannot be named 'default'")]
    [InlineData("Domain-0", "Domain-0")]
    [InlineData("work-dm", "-dm")]
    public void Invalid(string name, string reason)
    {
        Assert.False(QubeName.IsValid(name));
        Assert.Contains(reason, QubeName.Problem(name));
        var e = Assert.Throws<QubesFirewallException>(() => QubeName.Validate(name));
        Assert.Equal("InvalidQubeName", e.ErrorId);
        Assert.Equal(FailureKind.InvalidArgument, e.Kind);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Null_is_invalid()
    {
        Assert.False(QubeName.IsValid(null));
        Assert.Equal("InvalidQubeName", Assert.Throws<QubesFirewallException>(() => QubeName.Validate(null)).ErrorId);
    }
}
